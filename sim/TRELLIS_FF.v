// Behavioural model of the ECP5 TRELLIS_FF, for simulation only, in the one configuration
// the NPU instantiates (npu.hdl.pipeline.fanout): a D flip-flop on the rising edge of CLK
// with a synchronous reset to 0 on LSR, always enabled. Any other configuration stops
// elaboration rather than simulate something the model does not do.
module TRELLIS_FF(input CLK, input LSR, input CE, input DI, input M, output reg Q);
    parameter GSR = "ENABLED";
    parameter CEMUX = "1";
    parameter CLKMUX = "CLK";
    parameter LSRMUX = "LSR";
    parameter REGSET = "RESET";
    parameter SRMODE = "LSR_OVER_CE";
    generate
        if (CEMUX != "1" || CLKMUX != "CLK" || LSRMUX != "LSR" || REGSET != "RESET" || SRMODE != "LSR_OVER_CE")
            ERROR_TRELLIS_FF_MODE_NOT_MODELLED error();
    endgenerate
    initial Q = 1'b0;
    always @(posedge CLK)
        Q <= LSR ? 1'b0 : DI;
endmodule
