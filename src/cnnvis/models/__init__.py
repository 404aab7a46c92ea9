"""The networks of the papers, behind one interface.

Every model built here takes RGB images in [0, 1] (its input normalization is its first module, so
occluders, projections and optimized images all live in pixel space), is laid out as
``normalize -> features -> pool -> classifier``, and names its layers in ``model.layers``:
a readable name (``conv1``, ``stage3``, ``fc6``) maps to the module whose output is that layer's
(rectified) activation. Every module of its own gets its own activation module, so forward hooks
never see one module called twice. ``model.roles`` names the layers that play the papers' parts (ZF's layer 1,
its layer 5 / the CAM layer, Fig. 2's layers, ...), so experiments run on any architecture without a layer
override; ``model.weights_source`` says which weights it holds.

The modules, imports running downward (pyproject.toml's contract): ``build`` (``build_model`` by name, the kinds
of network); one module per family (``zf_alexnet``, ``torchvision_cnns``, ``efficientnet``, ``transformers``,
``detectors``, ``segmenters``); ``weights`` (cached files, checkpoints, the random-output check); ``base`` (the
interface, layer names and roles, generic edits). Every public name is importable from ``cnnvis.models``.
"""

from cnnvis.models.base import (CNN, CONV_STACK_ROLES, DETECTOR, EFFICIENTNET_LITE0_ROLES, IMAGENET_MEAN,
                                IMAGENET_STD, RESNET18_ROLES, ROLE_MEANINGS, SEGMENTER, TF_MEAN, TF_STD, TRANSFORMER,
                                VGG16_ROLES, ImageClassifier, Normalize, UnsupportedModelError, fold_batchnorm,
                                frozen, get_layer, layer_names, layer_role, replace_head, resolve_layers)
from cnnvis.models.build import (BUILDERS, IMAGENET_WEIGHTS, MODEL_KINDS, OFFLINE_WEIGHTS, PRETRAINED_BUILTIN,
                                 TRANSFORMERS_DETECTORS_SEGMENTERS, build_model, model_kind, weights_description)
from cnnvis.models.detectors import fasterrcnn_mobilenet_v3_large_fpn
from cnnvis.models.efficientnet import MBConv, SamePad, efficientnet_lite0
from cnnvis.models.segmenters import Segmenter, deeplabv3_mobilenet_v3_large, fcn_resnet50, torchvision_segmenter
from cnnvis.models.torchvision_cnns import resnet18, torchvision_alexnet, vgg16
from cnnvis.models.transformers import TransformerClassifier, swin_classifier, swin_t, vit_b_16, vit_classifier
from cnnvis.models.weights import (DRAWN_HEAD, RANDOM_INIT, ZERO_HEAD_STD, check_random_output, load_checkpoint_state,
                                   output_is_constant)
from cnnvis.models.zf_alexnet import ALEXNET_SPEC, ZFNET_SPEC, alexnet, conv_stack_classifier, scaled, zfnet

__all__ = [
    # base
    "CNN", "CONV_STACK_ROLES", "DETECTOR", "EFFICIENTNET_LITE0_ROLES", "IMAGENET_MEAN", "IMAGENET_STD",
    "RESNET18_ROLES", "ROLE_MEANINGS", "SEGMENTER", "TF_MEAN", "TF_STD", "TRANSFORMER", "VGG16_ROLES",
    "ImageClassifier", "Normalize", "UnsupportedModelError", "fold_batchnorm", "frozen", "get_layer", "layer_names",
    "layer_role", "replace_head", "resolve_layers",
    # build
    "BUILDERS", "IMAGENET_WEIGHTS", "MODEL_KINDS", "OFFLINE_WEIGHTS", "PRETRAINED_BUILTIN",
    "TRANSFORMERS_DETECTORS_SEGMENTERS", "build_model", "model_kind", "weights_description",
    # families
    "fasterrcnn_mobilenet_v3_large_fpn", "MBConv", "SamePad", "efficientnet_lite0", "Segmenter",
    "deeplabv3_mobilenet_v3_large", "fcn_resnet50", "torchvision_segmenter", "resnet18", "torchvision_alexnet", "vgg16",
    "TransformerClassifier", "swin_classifier", "swin_t", "vit_b_16", "vit_classifier",
    "ALEXNET_SPEC", "ZFNET_SPEC", "alexnet", "conv_stack_classifier", "scaled", "zfnet",
    # weights
    "DRAWN_HEAD", "RANDOM_INIT", "ZERO_HEAD_STD", "check_random_output", "load_checkpoint_state", "output_is_constant",
]
