"""The Sigma compiler: pySigma rule objects -> IR (pure) -> rule programs the engine runs
over Arrow batches (``to_arrow``; see ``detections.engine.matcher``)."""

from __future__ import annotations

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
]
