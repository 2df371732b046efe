"""Train, export and quantise the digits classifier that ``make demo`` runs.

Run ``python -m npu.firmware.models.make_digits`` to remake ``digits_int8.onnx``.
Everything is deterministic and local: scikit-learn's bundled 8x8 digits (1797
images, no download), a 64-32-10 ReLU MLP (logits out: the class is their argmax)
trained by scikit-learn, exported to ONNX by hand (``onnx.helper``) and quantised by
ONNX Runtime's ``quantize_static`` (QDQ format, int8 activations, per-channel int8
weights) calibrated on training images.

The last 100 images (``held_out()``) are never trained or calibrated on: they are the
demo's test set.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["HELD_OUT", "digits", "held_out", "float_model", "quantize", "main"]

#: Images at the end of the data set kept out of training and calibration.
HELD_OUT = 100
HERE = Path(__file__).resolve().parent
MODEL = HERE / "digits_int8.onnx"


def digits():
    """(images as float32 (n, 1, 64) in 0..1, labels) from scikit-learn's bundled set."""
    from sklearn.datasets import load_digits
    data = load_digits()
    x = (data.data.astype(np.float32) / 16.0).reshape(-1, 1, 64)
    return x, data.target.astype(np.int64)


def held_out():
    """The demo's test images and labels: the last :data:`HELD_OUT` of the set."""
    x, y = digits()
    return x[-HELD_OUT:], y[-HELD_OUT:]


def float_model(hidden=32, seed=0):
    """Train the MLP on the first images; return the float ONNX model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.neural_network import MLPClassifier

    x, y = digits()
    x_train, y_train = x[:-HELD_OUT, 0], y[:-HELD_OUT]
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), activation="relu", max_iter=600, random_state=seed)
    clf.fit(x_train, y_train)
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), name) for name, v in
             (("fc1.weight", w1), ("fc1.bias", b1), ("fc2.weight", w2), ("fc2.bias", b2))]
    nodes = [
        helper.make_node("Gemm", ["image", "fc1.weight", "fc1.bias"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu1"),
        helper.make_node("Gemm", ["h_relu", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="npu-gen")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def quantize(model, calibration, out_path, *, quant_format="QDQ", per_channel=True,
             activation_type="int8"):
    """Quantise a float ONNX model with ONNX Runtime's ``quantize_static``.

    ``calibration``: float32 samples shaped like the model's input.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    input_name = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: np.asarray(s, np.float32)} for s in calibration])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "float.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(out_path), Reader(),
                        quant_format=QuantFormat.QDQ if quant_format == "QDQ" else QuantFormat.QOperator,
                        per_channel=per_channel,
                        activation_type=QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return out_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODEL, help="where to write the int8 model")
    args = parser.parse_args(argv)
    model = float_model()
    x, _ = digits()
    quantize(model, x[:-HELD_OUT][:200], args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
