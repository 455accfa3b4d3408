"""Encoder of the TensorBoard writer for HPARAMS media: what torch 2.13's ``add_hparams`` writes.

``encode_hparams(media, tag, directory)`` returns the hparams plugin's three summaries, in
torch's order: the experiment (each hyperparameter's name, type and discrete domain; each
metric's tag), the session start (the hyperparameters' values) and the session end (status
success).  TensorBoard's HParams dashboard lists the run holding them as one session, whose
metric values are the run's scalars of those tags (the caller sends them as scalars).

Types as torch gives them: a number (a bool too: torch checks ``int`` first) is
``DATA_TYPE_FLOAT64``, a str ``DATA_TYPE_STRING``; a ``None`` value is left out.  With the
option ``bools`` (tensorboardX's ``hparams``, which Ray Tune's logger uses) a bool is
``DATA_TYPE_BOOL``.
"""

from __future__ import annotations

from typing import Any, List, Mapping

from ..media import Media

_DATA_TYPES = {float: "DATA_TYPE_FLOAT64", str: "DATA_TYPE_STRING", bool: "DATA_TYPE_BOOL"}
_FIELDS = {float: "number_value", str: "string_value", bool: "bool_value"}


def _kind(name: str, value: Any, bools: bool) -> type:
    if isinstance(value, str):
        return str
    if bools and isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float
    raise ValueError(f"tensorboard: hyperparameter {name!r} is a {type(value).__name__}; "
                     "it must be an int, float, str or bool")


def encode_hparams(media: Media, tag: str, directory: str) -> List[Any]:
    """The experiment, session-start and session-end summaries of ``media.options``."""
    from google.protobuf import struct_pb2
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    options = media.options
    hparams: Mapping[str, Any] = options.get("hparams") or {}
    metrics: Mapping[str, Any] = options.get("metrics") or {}
    domains: Mapping[str, Any] = options.get("hparam_domain_discrete") or {}

    start = plugin_data_pb2.SessionStartInfo()
    infos = []
    for name, value in hparams.items():
        if value is None:
            continue
        kind = _kind(name, value, bool(options.get("bools")))
        field = _FIELDS[kind]
        setattr(start.hparams[name], field, kind(value))
        domain = None
        if name in domains:
            domain = struct_pb2.ListValue(values=[struct_pb2.Value(**{field: item}) for item in domains[name]])
        infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(_DATA_TYPES[kind]),
                                        domain_discrete=domain))
    experiment = api_pb2.Experiment(hparam_infos=infos,
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=name))
                                                  for name in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value("STATUS_SUCCESS"))

    def event(summary_tag: str, **content: Any) -> Any:
        data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **content)
        plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                        content=data.SerializeToString())
        value = summary_pb2.Summary.Value(tag=summary_tag, metadata=summary_pb2.SummaryMetadata(plugin_data=plugin))
        return event_pb2.Event(summary=summary_pb2.Summary(value=[value]))

    return [event(metadata.EXPERIMENT_TAG, experiment=experiment),
            event(metadata.SESSION_START_INFO_TAG, session_start_info=start),
            event(metadata.SESSION_END_INFO_TAG, session_end_info=end)]
