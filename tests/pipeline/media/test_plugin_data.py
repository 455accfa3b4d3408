"""add_tensor, add_histogram_raw, add_pr_curve(_raw), add_custom_scalars*, add_mesh, add_embedding,
add_graph and file_writer through statbus, against torch's writer, read back with TensorBoard's reader."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

import plugin_data_sequence
from plugin_data_sequence import TENSOR_TAGS, model, plugin_data_calls
from summary_writer_helpers import accumulator, read_run, run_child, start_collector, stop

PLUGINS = ("tensor", "pr_curves", "custom_scalars", "mesh", "hparams")
TRACE_DEPRECATED = r"ignore:`torch\.jit\.trace(_method)?` is deprecated:DeprecationWarning"
"""torch 2.13's add_graph warns so (its tracer is deprecated); statbus's add_graph traces with it too."""


def read_back(directory: str) -> dict:
    """Everything TensorBoard's EventAccumulator sees in one run directory."""
    acc = accumulator(directory)
    tags = acc.Tags()
    return {
        **{key: read_run(directory)[key] for key in ("scalars", "histograms")},
        "tensors": {t: [(e.step, e.tensor_proto) for e in acc.Tensors(t)] for t in tags["tensors"]},
        "metadata": {t: acc.SummaryMetadata(t) for t in tags["tensors"]},
        "graph": acc.Graph() if tags["graph"] else None,
        "run_metadata": {t: acc.RunMetadata(t) for t in tags["run_metadata"]},
        "plugins": {name: plugin_content(acc, name) for name in PLUGINS if plugin_content(acc, name)},
    }


def plugin_content(acc, name: str) -> dict:
    """tag → the plugin's content bytes for the run's tags of plugin ``name`` ({} when it has none)."""
    try:
        return acc.PluginTagToContent(name)
    except KeyError:
        return {}


def projector_files(directory: str) -> dict:
    """projector_config.pbtxt's text and every embedding file (a sprite as its pixels)."""
    from PIL import Image

    found = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            if name == "sprite.png":
                with Image.open(path) as image:
                    found[os.path.relpath(path, directory)] = (image.mode, image.size, image.tobytes())
            elif name.endswith((".tsv", ".pbtxt")):
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, directory)] = handle.read()
    return found


def assert_same_tensorboard_result(torch_dir: str, statbus_dir: str) -> None:
    want, got = read_back(torch_dir), read_back(statbus_dir)
    assert sorted(got["tensors"]) == sorted(want["tensors"])
    for tag, points in want["tensors"].items():  # tensor, PR curves, meshes, custom scalars, hparams
        assert got["tensors"][tag] == points, tag
        assert got["metadata"][tag] == want["metadata"][tag], tag
    assert got["histograms"] == want["histograms"]
    assert got["scalars"] == want["scalars"]
    assert got["graph"] is not None and got["graph"] == want["graph"]
    assert got["run_metadata"] == want["run_metadata"]
    assert got["plugins"] == want["plugins"]  # each tag's plugin content, hparams' tensor-less values too
    assert projector_files(statbus_dir) == projector_files(torch_dir)

    # What the calls were meant to write is there (not only equal to torch's).
    assert set(TENSOR_TAGS) | {"pr", "pr_raw", "custom_scalars__config__", "mesh_VERTEX"} <= set(got["tensors"])
    assert set(got["plugins"]["hparams"]) == {f"_hparams_/{name}" for name in ("experiment", "session_start_info",
                                                                               "session_end_info")}
    assert [step for step, _ in got["tensors"]["pr"]] == [1, 2, 3]
    assert [step for step, _ in got["histograms"]["raw"]] == [4, 5]
    assert got["scalars"]["event"] == [(9, 2.5), (11, 3.5)]
    assert {node.name for node in got["graph"].node} >= {"input/input.1", "output/output.1", "Sequential/ReLU[1]/input"}
    config = projector_files(statbus_dir)["projector_config.pbtxt"].decode()
    assert config.count("embeddings {") == 3 and "00003/with%2fslash/metadata.tsv" in config


@pytest.mark.filterwarnings(TRACE_DEPRECATED)
def test_each_call_lands_through_a_collector_as_torch_writes_it(tmp_path):
    """The same calls through torch's writer and, in a child process, through statbus's to a real
    collector (torch's layout, as an on-demand one gets): the same TensorBoard result."""
    import torch
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    plugin_data_calls(TorchWriter(str(tmp_path / "torch" / "runs" / "exp1")), np, torch)
    collector = start_collector(str(tmp_path / "statbus"), "runs")
    try:
        run_child("statbus", str(tmp_path / "statbus" / "runs" / "exp1"), script=plugin_data_sequence.__file__)
        stop(collector)
    finally:
        collector.close()
    assert_same_tensorboard_result(str(tmp_path / "torch" / "runs" / "exp1"), str(tmp_path / "statbus" / "runs" / "exp1"))
    onnx_graph = read_back(str(tmp_path / "statbus" / "runs" / "exp1_onnx"))["graph"]
    assert onnx_graph == read_back(str(tmp_path / "torch" / "runs" / "exp1_onnx"))["graph"]
    assert [(node.name, node.op) for node in onnx_graph.node] == [("X", "Variable"), ("Y", "Variable"), ("H", "Gemm"),
                                                                  ("Y", "Relu")]


def test_hparams_summaries_through_file_writer_reach_the_hparams_plugin(tmp_path):
    """SB3's and Ray Tune's HParams path: torch's and tensorboardX's hparams() summaries through
    file_writer.add_summary, through a collector, as the hparams plugin reads them."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "runs"
    collector = start_collector(str(tmp_path), "runs")
    try:
        run_child("statbus-hparams", str(run_dir), script=plugin_data_sequence.__file__)
        stop(collector)
    finally:
        collector.close()
    tune_content = read_back(str(run_dir / "tune"))["plugins"]["hparams"]
    assert plugin_data_pb2.HParamsPluginData.FromString(
        tune_content["_hparams_/session_start_info"]).session_start_info.hparams["gamma"].number_value == 0.9
    content = read_back(str(run_dir / "sb3"))["plugins"]["hparams"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {info.name for info in experiment.hparam_infos} == {"gamma", "algo"}
    assert [info.name.tag for info in experiment.metric_infos] == ["rollout/ep_rew_mean"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["gamma"].number_value == 0.99 and start.hparams["algo"].string_value == "PPO"
    assert "_hparams_/session_end_info" in content


# --- the encoders alone ------------------------------------------------------------------------


def encode(media, tag="t", directory=""):
    from statbus.plugins.writers.tb_plugin_data import encode_tensor

    return encode_tensor(media, tag, directory)


def test_pr_curve_counts_each_prediction_at_every_threshold_at_or_below_it():
    from statbus.plugins.writers.tb_plugin_data import pr_curve_data

    data = pr_curve_data(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1]), 3)  # thresholds 0, 0.5, 1
    tp, fp, tn, fn, precision, recall = data
    assert tp.tolist() == [2, 1, 0] and fp.tolist() == [2, 1, 0]
    assert tn.tolist() == [0, 1, 2] and fn.tolist() == [0, 1, 2]
    assert precision.tolist() == [0.5, 0.5, 0.0] and recall.tolist() == [1.0, 0.5, 0.0]


def test_tensor_dtypes_follow_torchs_proto_fields():
    from tensorboard.util import tensor_util

    from statbus.pipeline.plugin_data_calls import tensor_media

    for array, field in ((np.arange(4, dtype=np.int32).reshape(2, 2), "int_val"), (np.array([1.5]), "double_val"),
                         (np.array([7], dtype=np.uint8), "uint32_val"), (np.array([True]), "bool_val")):
        proto = encode(tensor_media("t", array))[0].summary.value[0].tensor
        assert list(proto.tensor_shape.dim[i].size for i in range(array.ndim)) == list(array.shape)
        assert list(getattr(proto, field)) == array.reshape(-1).tolist()
    proto = encode(tensor_media("t", np.arange(6, dtype=np.float32).reshape(3, 2)))[0].summary.value[0].tensor
    assert tensor_util.make_ndarray(proto).tolist() == np.arange(6, dtype=np.float32).reshape(3, 2).tolist()


def test_embedding_written_twice_is_one_entry_of_the_projector_config(tmp_path):
    """A worker restarted after writing an embedding writes it again: its config entry is replaced."""
    from statbus.pipeline.plugin_data_calls import embedding_media

    media = embedding_media("emb", np.eye(3), ["a", "b", "c"], None, 4, None)
    assert encode(media, "emb", str(tmp_path)) == [] and encode(media, "emb", str(tmp_path)) == []
    files = projector_files(str(tmp_path))
    assert files["projector_config.pbtxt"].count(b"embeddings {") == 1
    assert files[os.path.join("00004", "emb", "tensors.tsv")] == b"1.0\t0.0\t0.0\n0.0\t1.0\t0.0\n0.0\t0.0\t1.0\n"
    assert files[os.path.join("00004", "emb", "metadata.tsv")] == b"a\nb\nc\n"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_sprite_of_tall_images_keeps_one_column_per_image_width():
    from PIL import Image

    from statbus.plugins.writers.tb_plugin_data import sprite_png

    images = np.ones((2, 1, 8, 2))  # two white 8×2 images: 2 columns, 1 row → 4 wide, 8 high
    with Image.open(io.BytesIO(sprite_png(images))) as sprite:
        assert sprite.size == (4, 8) and np.asarray(sprite).min() == 255


def test_unknown_tensor_use_names_it():
    from statbus.plugins.media import Media, MediaKind

    with pytest.raises(ValueError, match="unknown tensor use 'heatmap' of 't'"):
        encode(Media(MediaKind.TENSOR, (), "", b"", {"use": "heatmap"}))


def test_bad_arguments_raise_at_the_call_naming_the_tag():
    from statbus.pipeline import plugin_data_calls as calls

    cases = [
        (lambda: calls.tensor_media("t", np.array([1], dtype=np.uint16)), ValueError, "t has unsupported tensor dtype"),
        (lambda: calls.tensor_media("t", ["a"]), TypeError, "tensor of 't' must be an array of numbers"),
        (lambda: calls.histogram_raw_media("h", 0, 1, 2, 1, 1, [1.0, 2.0], [1.0]), ValueError,
         r"add_histogram_raw\('h'\): bucket_limits and bucket_counts must be 1-D and of one length"),
        (lambda: calls.histogram_raw_media("h", "low", 1, 2, 1, 1, [1.0], [1.0]), TypeError, "min of 'h' must be a number"),
        (lambda: calls.pr_curve_media("p", [1, 0], [0.5], 127, None), ValueError, "labels and predictions must have one shape"),
        (lambda: calls.pr_curve_media("p", [1], [0.5], 1, None), ValueError, "num_thresholds of 'p' must be an int >= 2"),
        (lambda: calls.pr_curve_media("p", [1], [0.5], 127, [1.0, 2.0]), ValueError, "weights must be a number or"),
        (lambda: calls.pr_curve_raw_media("r", ([1, 2], [1], [1], [1], [1], [1]), 127), ValueError,
         r"add_pr_curve_raw\('r'\): the six counts must be 1-D and of one length"),
        (lambda: calls.custom_scalars_media({"c": {"chart": ["Margin", ["a", "b"]]}}), ValueError,
         "margin chart 'chart' of 'c' needs 3 tags"),
        (lambda: calls.custom_scalars_media({"c": {"chart": ["Pie", ["a"]]}}), ValueError, "has kind 'Pie'"),
        (lambda: calls.custom_scalars_media(["Multiline"]), TypeError, "layout must be a dict"),
        (lambda: calls.mesh_media("m", np.zeros((4, 3)), None, None, None), ValueError,
         r"add_mesh\('m'\): vertices must be 3-D"),
        (lambda: calls.mesh_media("m", np.zeros((1, 4, 3)), None, None, {"f": object()}), TypeError,
         "config_dict must be JSON-serializable"),
        (lambda: calls.embedding_media("e", np.zeros(3), None, None, 0, None), ValueError, r"add_embedding\('e'\): mat must be 2-D"),
        (lambda: calls.embedding_media("e", np.zeros((3, 2)), ["a"], None, 0, None), ValueError, "1 labels for 3 points"),
        (lambda: calls.embedding_media("e", np.zeros((3, 2)), [[1], [2], [3]], None, 0, ["a", "b"]), ValueError,
         "each metadata row needs 2 columns"),
        (lambda: calls.embedding_media("e", np.zeros((3, 2)), None, np.zeros((3, 2, 4, 4)), 0, None), ValueError,
         "label_img must be N×C×H×W with N = 3 points and C 1 or 3"),
        (lambda: calls.summary_media({"value": []}), TypeError, "file_writer.add_summary takes a TensorBoard proto"),
        (lambda: calls.onnx_graph_media(b"model"), TypeError, "add_onnx_graph takes the path of an ONNX model file"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


@pytest.mark.filterwarnings(TRACE_DEPRECATED)
def test_graph_is_traced_in_the_caller_and_sent_as_graphdef_bytes():
    import torch
    from tensorboard.compat.proto.graph_pb2 import GraphDef

    from statbus.pipeline.plugin_data_calls import graph_media

    media = graph_media(model(torch), torch.zeros(1, 4), False, True)
    assert media.options == {"use": "graph"} and media.dtype == ""
    events = encode(media, "step1")
    assert GraphDef.FromString(events[0].graph_def).node and events[1].tagged_run_metadata.tag == "step1"


MINE = ("add_tensor", "add_histogram_raw", "add_pr_curve", "add_pr_curve_raw", "add_custom_scalars",
        "add_custom_scalars_marginchart", "add_custom_scalars_multilinechart", "add_mesh", "add_embedding", "add_graph",
        "add_onnx_graph", "get_logdir", "flush", "close")


def test_methods_take_torchs_parameters_in_torchs_order():
    import inspect

    from torch.utils.tensorboard.writer import FileWriter as TorchFileWriter
    from torch.utils.tensorboard.writer import SummaryWriter as TorchWriter

    from statbus.pipeline.summary_writer import FileWriter, SummaryWriter

    def parameters(function):
        return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]

    for name in MINE:
        assert parameters(getattr(SummaryWriter, name)) == parameters(getattr(TorchWriter, name)), name
    for name in ("add_summary", "add_event", "get_logdir", "flush", "close"):
        assert parameters(getattr(FileWriter, name)) == parameters(getattr(TorchFileWriter, name)), name
    torch_init = parameters(TorchWriter.__init__)
    assert parameters(SummaryWriter.__init__)[:len(torch_init)] == torch_init
    assert "logdir" in inspect.signature(SummaryWriter.__init__).parameters  # tensorboardX's spelling
