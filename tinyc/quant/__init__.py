"""int8 quantization: TFLite's scheme and its fixed-point arithmetic, so int8 results are bit-exact."""
