// Behavioural model of the ECP5 MULT18X18D, for simulation only (Yosys ships no model of
// it), in the configurations the NPU instantiates (npu.hdl.pe.mult18x18d_registered):
// A and B signed, the input and output registers on CLK0 with CE0, the pipeline register
// on CLK0 or left out ("NONE"), RST0 tied low. P is the 36-bit signed product, three clock
// edges after its operands (two without the pipeline register). Any other configuration
// stops elaboration rather than simulate something the model does not do.
module MULT18X18D(
    input A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17,
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CE0, RST0,
    output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17, P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter RESETMODE = "SYNC";
    parameter SOURCEB_MODE = "B_SHIFT";
    generate
        if (REG_INPUTA_CLK != "CLK0" || REG_INPUTB_CLK != "CLK0"
                || (REG_PIPELINE_CLK != "CLK0" && REG_PIPELINE_CLK != "NONE") || REG_OUTPUT_CLK != "CLK0")
            ERROR_MULT18X18D_MODE_NOT_MODELLED error();
    endgenerate
    reg signed [17:0] a_q, b_q;
    reg signed [35:0] product_q, p_q;
    always @(posedge CLK0) begin
        if (CE0) begin
            a_q <= {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
            b_q <= {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
            product_q <= a_q * b_q;
            p_q <= (REG_PIPELINE_CLK == "NONE") ? a_q * b_q : product_q;
        end
    end
    // SIGNEDA, SIGNEDB must be 1 and SOURCEA, SOURCEB, RST0 0: checked when they change.
    always @(SIGNEDA or SIGNEDB or SOURCEA or SOURCEB or RST0)
        if (SIGNEDA !== 1'b1 || SIGNEDB !== 1'b1 || SOURCEA !== 1'b0 || SOURCEB !== 1'b0 || RST0 !== 1'b0) begin
            $display("MULT18X18D model: only signed operands from A and B without reset are modelled");
            $finish;
        end
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p_q;
endmodule
