"""The Sigma compiler: pySigma rule objects -> IR (pure) -> one Spark Column per rule.

``to_column`` is imported lazily so that importing the compiler (and validating rules in
CI) never loads pyspark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detections.compiler import ir
from detections.compiler.ir import IR_VERSION, And, IRError, Node, Not, Or, Pred
from detections.compiler.sigma_to_ir import (
    DEFAULT_CONFIG,
    CompiledRule,
    CompileError,
    CompilerConfig,
    LogSource,
    Rejection,
    compile_path,
    compile_rule,
    compile_yaml,
    detection_to_ir,
    rule_files,
)

if TYPE_CHECKING:
    from detections.compiler.to_spark import to_column

__all__ = [
    "DEFAULT_CONFIG",
    "IR_VERSION",
    "And",
    "CompileError",
    "CompiledRule",
    "CompilerConfig",
    "IRError",
    "LogSource",
    "Node",
    "Not",
    "Or",
    "Pred",
    "Rejection",
    "compile_path",
    "compile_rule",
    "compile_yaml",
    "detection_to_ir",
    "ir",
    "rule_files",
    "to_column",
]


def __getattr__(name: str) -> Any:
    if name == "to_column":
        from detections.compiler.to_spark import to_column

        return to_column
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
