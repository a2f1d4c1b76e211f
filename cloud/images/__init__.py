"""OCI images of registered models: reproducible layers, the image builder, layout and archive export, and the
safe reading and unpacking of untrusted images.

Build with `build_model_image(store, ModelImageSpec(...), base=...)`; export with `write_layout`,
`write_oci_archive` or `write_docker_archive`; read an image with `LayoutDir(path=...).image(ref)` or
`OciArchive(path=...)`, and unpack it with `unpack_image`.
"""

from edgewise.cloud.images.archives import write_docker_archive, write_oci_archive
from edgewise.cloud.images.builder import (
    LABEL_MODEL_DIGEST,
    LABEL_MODEL_NAME,
    LABEL_MODEL_VERSION,
    MODEL_REPOSITORY,
    MODULE_CONFIG,
    BaseImage,
    BuiltImage,
    ModelImageSpec,
    StoreBlobs,
    build_model_image,
    model_files_from_entries,
)
from edgewise.cloud.images.extract import apply_layer
from edgewise.cloud.images.layers import Layer, LayerFile, Source, build_layer, write_layer_to, write_tar
from edgewise.cloud.images.layout import write_layout
from edgewise.cloud.images.oci import BlobReader, Descriptor, OciImage, VerifiedReader
from edgewise.cloud.images.unpack import LayoutDir, OciArchive, load_image, open_image, unpack_image

__all__ = [
    "LABEL_MODEL_DIGEST",
    "LABEL_MODEL_NAME",
    "LABEL_MODEL_VERSION",
    "MODEL_REPOSITORY",
    "MODULE_CONFIG",
    "BaseImage",
    "BlobReader",
    "BuiltImage",
    "Descriptor",
    "Layer",
    "LayerFile",
    "LayoutDir",
    "ModelImageSpec",
    "OciArchive",
    "OciImage",
    "Source",
    "StoreBlobs",
    "VerifiedReader",
    "apply_layer",
    "build_layer",
    "build_model_image",
    "load_image",
    "model_files_from_entries",
    "open_image",
    "unpack_image",
    "write_docker_archive",
    "write_layer_to",
    "write_layout",
    "write_oci_archive",
    "write_tar",
]
