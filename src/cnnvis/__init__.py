"""cnnvis: seeing inside convolutional networks, as a library.

Models take RGB images in [0, 1] and name their layers (``model.layers``); ``model.roles`` says which layer plays
each part of the papers (``layer_role(model, "last_conv")``: ZF's layer 5, the CAM layer). ``build_model`` defaults
to the ImageNet weights that ship offline (EfficientNet-Lite0). Every attribution method is a class with one verb,
``method.attribute(images, target=None)`` (None: each image's top-1 class)::

    import cnnvis
    model = cnnvis.build_model("efficientnet_lite0").eval()
    image = cnnvis.load_image("cat.jpg")
    with cnnvis.GradCAM(model, cnnvis.layer_role(model, "last_conv")) as gradcam:
        cnnvis.save_overlay(image[0], gradcam.attribute(image)[0], "cat_gradcam.png")

Names are imported on first use, so ``import cnnvis`` pulls in neither matplotlib nor Hydra.
"""

from importlib import import_module

from cnnvis.threads import default_passive_wait

default_passive_wait()  # before torch loads OpenMP: idle threads sleep, so a busy machine is not 100x slower

# public name -> the module that defines it
_EXPORTS = {
    "models": ["build_model", "layer_role", "layer_names", "get_layer", "weights_description", "ROLE_MEANINGS"],
    "data": ["load_image", "load_images", "imagenet_classes", "index_imagefolder", "ImageFiles"],
    "hooks": ["activations", "record_activations"],
    "cams": ["CAM", "GradCAM", "GradCAMPlusPlus", "ScoreCAM", "LayerCAM", "Saliency", "Deconvnet", "GuidedBackprop",
             "GuidedGradCAM", "make_method", "as_map"],
    "reshapes": ["vit_reshape", "swin_reshape", "fpn_reshape"],
    "targets": ["ClassScore", "ClassProbability", "SegmentationRegion", "DetectionBox"],
    "occlusion": ["occlusion_map"],
    "deconvnet": ["deconv_project"],
    "mining": ["top_activations"],
    "shards": ["ShardPlan", "shard_indices"],
    "activation_max": ["maximize", "Regularization"],
    "objectives": ["channel", "unit", "class_logit"],
    "plotting.explain": ["overlay", "save_overlay"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'cnnvis' has no attribute {name!r}")
    value = getattr(import_module(f"cnnvis.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
