"""The environment a backend process starts with: an allow-list of the app's, never all of it.

The app's environment holds its secrets (BATON_ADMIN_PASSWORD, CHAINLIT_AUTH_SECRET, database URLs,
the variables remote versions read their API keys from). A backend runs third-party code (vLLM, a
model's own Python) and needs none of them, so it gets only what a Python program, torch and vLLM
read: locale, paths, and the variable families of vLLM, torch, OpenMP/BLAS, CUDA/ROCm and Hugging
Face. The operator can name more (BATON_BACKEND_PASS_ENV) or set values (BATON_BACKEND_ENV).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

# Plain process needs, plus variables vLLM or torch read that have no family prefix. LD_PRELOAD is
# vLLM's own advice on CPU (tcmalloc, an OpenMP runtime); CC/CXX are torch.compile's compilers; the CA
# bundles let a model download verify TLS.
PASSED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE",
    "TMPDIR", "TMP", "TEMP", "LD_LIBRARY_PATH", "LD_PRELOAD", "VIRTUAL_ENV", "CONDA_PREFIX",
    "NUMEXPR_MAX_THREADS", "MAX_JOBS", "CC", "CXX", "NO_COLOR", "DO_NOT_TRACK",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    # several GPUs: torch.distributed's rendezvous (proxy variables are left out: they may carry credentials)
    "MASTER_ADDR", "MASTER_PORT",
})
# Families of settings: vLLM, torch and its compilers, OpenMP, BLAS and oneDNN/oneCCL (vLLM on CPU), GPU runtimes,
# Hugging Face caches and tokens (a gated model's download needs HF_TOKEN), XDG cache paths, Python, and
# Ray and Gloo (vLLM across GPUs or hosts).
PASSED_PREFIXES = (
    "LC_", "VLLM_", "TORCH", "PYTORCH_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOMP_", "DNNL_", "ONEDNN_", "CCL_",
    "CUDA_", "CUBLAS", "CUDNN_", "NVIDIA_", "NCCL_", "HIP_", "ROCM_", "TRITON_",
    "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_", "XDG_", "PYTHON", "RAY_", "GLOO_",
)


def _extra(pattern: str, name: str) -> bool:
    """An operator's BATON_BACKEND_PASS_ENV entry: a name, or a prefix ending in `*`."""
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


def passes(name: str, extra: Iterable[str] = ()) -> bool:
    return name in PASSED_NAMES or name.startswith(PASSED_PREFIXES) or any(_extra(p, name) for p in extra)


def backend_environment(parent: Mapping[str, str], *, extra: Iterable[str], withheld: Iterable[str],
                        own: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of `parent` (plus names or prefixes in `extra`), without the variables
    in `withheld` (remote versions' key variables, whatever their names), then `own` on top: the
    values Baton and the operator set for every backend."""
    extra, refused = list(extra), set(withheld)
    return {**{k: v for k, v in parent.items() if k not in refused and passes(k, extra)}, **own}
