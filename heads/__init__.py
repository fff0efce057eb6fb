"""Task heads over dense backbones, installed as ``densebackbones.heads``.

Heads consume only a backbone's ``feature_info`` and its ``features_only`` outputs, so each sits on any registered
dense backbone. FC-DenseNet (semantic segmentation) and DSOD (detection) are tracked in their own issues and land
here as ``fc_densenet.py`` and ``dsod.py``; this package has no heads yet.
"""

__all__: list[str] = []
