"""The Python API: one plain function per pipeline stage, each taking a validated `Config`."""

from .baseline import run_baseline
from .compare import LatencySettings, run_compare, text_table
from .config import Config, config_reference, config_to_yaml, load_config
from .demo import demo_config, run_demo
from .errors import DomaintuneError
from .evaluate import run_evaluate
from .export import run_export
from .feedback_export import run_feedback_export
from .generate import run_generate
from .io import read_json
from .merge import run_merge
from .prepare import run_prepare
from .serve import ServeSettings, run_serve
from .sweep import run_sweep
from .train import run_train

__all__ = [
    "Config",
    "DomaintuneError",
    "ServeSettings",
    "LatencySettings",
    "config_reference",
    "config_to_yaml",
    "demo_config",
    "load_config",
    "run_baseline",
    "run_compare",
    "run_demo",
    "run_evaluate",
    "run_feedback_export",
    "run_export",
    "run_generate",
    "run_merge",
    "run_prepare",
    "run_serve",
    "run_sweep",
    "run_train",
    "text_table",
    "read_json",
]
