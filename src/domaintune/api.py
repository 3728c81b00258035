"""The Python API: one plain function per pipeline stage, each taking a validated `Config`."""

from domaintune.core.config import config_reference, config_to_yaml, load_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import read_json
from domaintune.core.schema import Config
from domaintune.data.prepare import run_prepare
from domaintune.evaluation.baseline import run_baseline
from domaintune.evaluation.evaluate import run_evaluate
from domaintune.export.gguf import run_export
from domaintune.export.merge import run_merge
from domaintune.modeling.generate import run_generate
from domaintune.reporting.compare import LatencySettings, run_compare
from domaintune.reporting.tables import text_table
from domaintune.serving.app import ServeSettings, run_serve
from domaintune.serving.feedback_export import run_feedback_export
from domaintune.training.memory_plan import run_plan
from domaintune.training.train import run_train
from domaintune.workflows.demo import demo_config, run_demo
from domaintune.workflows.sweep import run_sweep

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
    "run_plan",
    "run_prepare",
    "run_serve",
    "run_sweep",
    "run_train",
    "text_table",
    "read_json",
]
