"""The ops that belong to no larger family, split into submodules along their seams:

- misc_random: Dropout, Bernoulli, RandomUniform(Like), RandomNormal(Like), Multinomial
- misc_loss: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
- misc_nms: NonMaxSuppression
- misc_strings: StringConcat, StringNormalizer, StringSplit, RegexFullMatch, TfIdfVectorizer
- misc_ml: the ai.onnx.ml ops ArrayFeatureExtractor, Binarizer, LabelEncoder
- misc_trees: the ai.onnx.ml TreeEnsemble
- misc_training: the ai.onnx.preview.training optimizers Adagrad, Adam, Momentum
- misc_image: ImageDecoder (the uncompressed formats only)

Importing this module registers all of them.
"""

from . import (  # noqa: F401  (registers their kernels)
    misc_image,
    misc_loss,
    misc_ml,
    misc_nms,
    misc_random,
    misc_strings,
    misc_training,
    misc_trees,
)
