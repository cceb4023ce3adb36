"""Generate every other view of the contract from the pydantic models.

* ``spark_event_schema()``: the StructType the detection job parses Kafka records with.
  It is the union of all event models (one column per Sigma field), so one streaming
  query reads every event type and routing happens on ``event_type``.
* ``es_mappings(model)``: Elasticsearch mappings for findings (and events).
* ``event_json_schema()``: the JSON Schema published for sensor authors.

pyspark is imported lazily so the schema package stays importable without Spark.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from schemas.events import EVENT_ADAPTER, EVENT_MODELS, Envelope

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType

#: Strings longer than this are stored in _source but not indexed as keywords
#: (Lucene rejects single terms over 32 KB; command lines can be long).
KEYWORD_IGNORE_ABOVE = 8191


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``, ``Annotated[X, constraints]`` -> ``X`` (bounds are the
    validator's business, the storage type is X's); everything else unchanged."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _strip_optional(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        raise TypeError(f"unsupported union in schema: {annotation!r}")
    return annotation


def _field_name(name: str, info: Any) -> str:
    return info.alias or name


def event_columns() -> dict[str, Any]:
    """Union of all event models' fields, name -> annotation, in a stable order.

    Raises if two models declare the same field with different types: the flat Spark
    schema needs one type per column.
    """
    columns: dict[str, Any] = {}
    for model in (Envelope, *EVENT_MODELS):
        for name, info in model.model_fields.items():
            annotation = _strip_optional(info.annotation)
            if typing.get_origin(annotation) is Literal:
                annotation = type(typing.get_args(annotation)[0])
            if name in columns and columns[name] != annotation:
                raise TypeError(
                    f"field {name!r} has type {annotation!r} in {model.__name__} "
                    f"but {columns[name]!r} elsewhere"
                )
            columns[name] = annotation
    return columns


# --- Spark -----------------------------------------------------------------------------


def _spark_type(annotation: Any) -> DataType:
    from pyspark.sql import types as T

    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return _spark_type(type(typing.get_args(annotation)[0]))
    if origin is dict:
        key, value = typing.get_args(annotation)
        return T.MapType(_spark_type(key), _spark_type(value), valueContainsNull=True)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return T.ArrayType(_spark_type(item), containsNull=True)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _spark_struct(annotation)
    scalar = {
        str: T.StringType(),
        int: T.LongType(),
        bool: T.BooleanType(),
        float: T.DoubleType(),
        datetime: T.TimestampType(),
    }
    if annotation in scalar:
        return scalar[annotation]
    if annotation is Any:
        return T.StringType()
    raise TypeError(f"no Spark type for {annotation!r}")


def _spark_struct(model: type[BaseModel]) -> StructType:
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField(_field_name(name, info), _spark_type(info.annotation), nullable=True)
            for name, info in model.model_fields.items()
        ]
    )


def spark_event_schema() -> StructType:
    """The StructType of one event on the wire (all event types in one flat schema)."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField(name, _spark_type(ann), nullable=True)
            for name, ann in event_columns().items()
        ]
    )


# --- Arrow ---------------------------------------------------------------------------


def _arrow_type(annotation: Any) -> Any:
    import pyarrow as pa

    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return _arrow_type(type(typing.get_args(annotation)[0]))
    if origin is dict:
        key, value = typing.get_args(annotation)
        return pa.map_(_arrow_type(key), _arrow_type(value))
    if origin is list:
        return pa.list_(_arrow_type(typing.get_args(annotation)[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(
            [
                pa.field(_field_name(name, info), _arrow_type(info.annotation))
                for name, info in annotation.model_fields.items()
            ]
        )
    scalar = {
        str: pa.string(),
        int: pa.int64(),
        bool: pa.bool_(),
        float: pa.float64(),
        datetime: pa.timestamp("us", tz="UTC"),
    }
    if annotation in scalar:
        return scalar[annotation]
    if annotation is Any:
        return pa.string()
    raise TypeError(f"no Arrow type for {annotation!r}")


def arrow_event_schema() -> Any:
    """The Arrow schema of parsed events: what the rule engine reads (Spark hands the
    same columns to its Python workers)."""
    import pyarrow as pa

    return pa.schema([pa.field(n, _arrow_type(a)) for n, a in event_columns().items()])


# --- Elasticsearch ---------------------------------------------------------------------


def _es_property(annotation: Any, name: str) -> dict[str, Any]:
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return _es_property(type(typing.get_args(annotation)[0]), name)
    if origin is list:
        return _es_property(typing.get_args(annotation)[0], name)
    if origin is dict:
        # Free-form payloads (the raw event, extra fields): kept in _source, not indexed,
        # so a chatty sensor cannot blow up the index's field count.
        return {"type": "object", "enabled": False}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"properties": _es_properties(annotation)}
    if annotation is datetime:
        return {"type": "date"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "long"}
    if annotation is float:
        return {"type": "double"}
    if annotation is str:
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    raise TypeError(f"no Elasticsearch type for {name}: {annotation!r}")


def _es_properties(model: type[BaseModel]) -> dict[str, Any]:
    return {
        _field_name(name, info): _es_property(info.annotation, name)
        for name, info in model.model_fields.items()
    }


def es_mappings(model: type[BaseModel]) -> dict[str, Any]:
    """Strict mappings for one model: unknown fields are rejected, not guessed."""
    return {"dynamic": "strict", "properties": _es_properties(model)}


def es_event_mappings() -> dict[str, Any]:
    """Mappings for the events index: the union of all event models."""
    props = {name: _es_property(ann, name) for name, ann in event_columns().items()}
    return {"dynamic": "strict", "properties": props}


# --- JSON Schema -----------------------------------------------------------------------


def event_json_schema() -> dict[str, Any]:
    """JSON Schema of one event (a discriminated union on ``event_type``)."""
    schema: dict[str, Any] = EVENT_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Sigstream telemetry event"
    return schema
