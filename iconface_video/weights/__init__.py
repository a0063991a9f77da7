"""The model store: which weights exist, where they are looked for, checksums, licences, safe loading.

``MODELS`` (in ``catalogue.py``) lists every model; ``find_model_file`` finds a file in
``--models-dir``, ``$ICONFACE_MODELS``, the user cache, then the embedded copy; ``safe_load_torch``
and ``load_safetensors`` load weights without ever running pickled code.
"""

from iconface_video.errors import BadWeightsError, MissingModelError
from iconface_video.weights.catalogue import MODELS, Model, ModelFile, get_model
from iconface_video.weights.loading import (
    check_state_dict,
    load_safetensors,
    safe_load_torch,
    state_dict_of,
)
from iconface_video.weights.store import (
    FileCheck,
    candidate_paths,
    derive,
    embedded_dir,
    fetch,
    find_model_file,
    install_path,
    is_present,
    model_folder,
    search_dirs,
    user_cache_dir,
    verify,
)

__all__ = [
    "MODELS",
    "BadWeightsError",
    "FileCheck",
    "MissingModelError",
    "Model",
    "ModelFile",
    "candidate_paths",
    "check_state_dict",
    "derive",
    "embedded_dir",
    "fetch",
    "find_model_file",
    "get_model",
    "install_path",
    "is_present",
    "load_safetensors",
    "model_folder",
    "safe_load_torch",
    "search_dirs",
    "state_dict_of",
    "user_cache_dir",
    "verify",
]
