"""Weight compression without a dataset (issue 4).

bitpack: unsigned codes of 1 to 16 bits to and from bytes, per tensor or per channel. quantize:
uniform quantizers (symmetric or asymmetric, per tensor or per output channel, max-abs or MSE clipping)
and the rule for which tensors stay float. bias_correction: per-channel gain and shift that restore
each channel's mean and spread after quantization, and the relative RMS error the mixed-bit search
measures. fse (beside these) entropy-codes the codes.
"""

from .bias_correction import bias_correct, mean_relative_rms_error, relative_rms_error
from .bitpack import code_dtype, pack, packed_size, unpack
from .quantize import (MIN_QUANT_WEIGHT_CHANNEL, MIN_QUANT_WEIGHT_SIZE, QuantParams, dequantize, quantize,
                       should_quantize)

__all__ = [
    "MIN_QUANT_WEIGHT_CHANNEL", "MIN_QUANT_WEIGHT_SIZE", "QuantParams", "bias_correct", "code_dtype",
    "dequantize", "mean_relative_rms_error", "pack", "packed_size", "quantize", "relative_rms_error",
    "should_quantize", "unpack",
]
