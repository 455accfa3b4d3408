"""The plugin-data calls both torch's SummaryWriter and statbus's get (imported by the tests, run as
their child: ``python plugin_data_sequence.py torch|statbus|statbus-hparams PATH``)."""

from __future__ import annotations

import sys

TENSOR_TAGS = ("tensor/float32", "tensor/int64", "tensor/bool", "tensor/half", "tensor/uint8", "tensor/float64",
               "tensor/bfloat16")


def model(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))


def onnx_model(path: str) -> str:
    """A small ONNX model file (Gemm with attributes, then Relu), made with onnx's helpers."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((3, 4), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W"], ["H"], alpha=0.5, transB=1), helper.make_node("Relu", ["H"], ["Y"])],
        "small", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])], initializer=[weights])
    onnx.save(helper.make_model(graph), path)
    return path


def plugin_data_calls(writer, np, torch) -> None:
    """Every tensor/plugin-data/proto method of torch's SummaryWriter, with fixed data."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.summary import hparams

    rng = np.random.default_rng(7)
    tensors = (torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7, torch.tensor([1, -2, 3]),
               torch.tensor([True, False]), torch.tensor([0.5, -1.25], dtype=torch.float16),
               torch.tensor([[1, 255]], dtype=torch.uint8), torch.tensor(2.0 / 3.0, dtype=torch.float64),
               torch.tensor([1.5, -3.0, 1e30], dtype=torch.bfloat16))
    for step, (tag, tensor) in enumerate(zip(TENSOR_TAGS, tensors)):
        writer.add_tensor(tag, tensor, step)

    values = np.repeat(np.arange(50) + 0.001, np.arange(50))  # torch's own add_histogram_raw example
    counts, limits = np.histogram(values, bins=np.arange(52))
    writer.add_histogram_raw("raw", min=values.min(), max=values.max(), num=len(values), sum=values.sum(),
                             sum_squares=values.dot(values), bucket_limits=limits[1:].tolist(),
                             bucket_counts=counts.tolist(), global_step=4)
    writer.add_histogram_raw("raw", 0, 3, 4, 6, 14, np.array([1.0, 2.0, 3.0]), np.array([2, 1, 1]), 5)

    labels, predictions = rng.integers(0, 2, 200), rng.random(200)
    writer.add_pr_curve("pr", labels, predictions, 1)
    writer.add_pr_curve("pr", labels, predictions.astype(np.float32), 2, num_thresholds=20, weights=rng.random(200))
    writer.add_pr_curve("pr", torch.tensor(labels), torch.tensor(predictions), 3, num_thresholds=500)
    rows = np.array([[5, 3, 1], [4, 2, 0], [0, 2, 4], [0, 2, 4], [0.55, 0.6, 1.0], [1.0, 0.6, 0.2]])
    writer.add_pr_curve_raw("pr_raw", *rows, global_step=7, num_thresholds=3)

    writer.add_custom_scalars({"Taiwan": {"twse": ["Multiline", ["twse/0050", "twse/2330"]]},
                               "USA": {"dow": ["Margin", ["dow/aaa", "dow/bbb", "dow/ccc"]],
                                       "nasdaq": ["Margin", ["nasdaq/aaa", "nasdaq/bbb", "nasdaq/ccc"]]}})
    writer.add_custom_scalars_multilinechart(["loss/a", "loss/b"])
    writer.add_custom_scalars_marginchart(["m/v", "m/lo", "m/hi"], category="margins", title="m")

    vertices = torch.tensor([[1, 1, 1], [-1, -1, 1], [1, -1, -1], [-1, 1, -1]], dtype=torch.float).unsqueeze(0)
    colors = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 255]], dtype=torch.int).unsqueeze(0)
    faces = torch.tensor([[0, 2, 3], [0, 3, 1], [0, 1, 2], [1, 3, 2]], dtype=torch.int).unsqueeze(0)
    writer.add_mesh("mesh", vertices=vertices, colors=colors, faces=faces, global_step=3)
    writer.add_mesh("cloud", vertices=vertices * 2, config_dict={"camera": {"cls": "PerspectiveCamera", "fov": 75}},
                    global_step=4)

    points = torch.tensor(rng.normal(size=(10, 4)), dtype=torch.float32)
    label_img = torch.tensor(rng.random((10, 3, 4, 6)), dtype=torch.float32)
    writer.add_embedding(points, metadata=[f"p{i}" for i in range(10)], label_img=label_img, global_step=2)
    writer.add_embedding(points * 2, metadata=[[i, i % 3] for i in range(10)], metadata_header=["index", "class"],
                         tag="with/slash", global_step=3)
    writer.add_embedding(points[:5], label_img=label_img[:5, :1], tag="grey")

    writer.add_graph(model(torch), torch.zeros(2, 4))
    onnx_writer = type(writer)(writer.log_dir + "_onnx")  # a graph of its own: one graph per run
    onnx_writer.add_onnx_graph(onnx_model(writer.log_dir + ".onnx"))
    onnx_writer.close()

    experiment, session_start, session_end = hparams({"lr": 0.01, "optimizer": "adam"}, {"hp/reward": 0.0})
    writer.file_writer.add_summary(experiment)
    writer.file_writer.add_summary(session_start)
    writer.file_writer.add_summary(session_end, 5)
    writer.file_writer.add_event(Event(step=9, summary=Summary(value=[Summary.Value(tag="event", simple_value=2.5)])))
    writer.file_writer.add_event(Event(summary=Summary(value=[Summary.Value(tag="event", simple_value=3.5)])), step=11)
    assert writer.file_writer.get_logdir() == writer.get_logdir() == writer.log_dir
    writer.file_writer.flush()
    writer.flush()
    writer.close()


def hparams_calls(SummaryWriter, run_dir: str) -> None:
    """SB3's and Ray Tune's HParams path: torch's hparams() summaries through file_writer.add_summary
    into ``run_dir/sb3`` (made with tensorboardX's ``logdir=``), tensorboardX's into ``run_dir/tune``."""
    import os

    from tensorboardX.summary import hparams as tensorboardx_hparams
    from torch.utils.tensorboard.summary import hparams

    writer = SummaryWriter(logdir=os.path.join(run_dir, "sb3"))
    assert writer.logdir == writer.log_dir == os.path.join(run_dir, "sb3")
    for summary in hparams({"gamma": 0.99, "algo": "PPO"}, {"rollout/ep_rew_mean": 0.0}):
        writer.file_writer.add_summary(summary)
    tune = SummaryWriter(os.path.join(run_dir, "tune"))
    for summary in tensorboardx_hparams({"gamma": 0.9}, {"episode_reward_mean": 0.0}):
        tune.file_writer.add_summary(summary, 3)
    writer.close()
    tune.close()


def main(kind: str, path: str) -> None:
    """``kind``: torch, statbus (the plugin-data calls into log_dir ``path``) or statbus-hparams
    (:func:`hparams_calls` into the run directory ``path``)."""
    import numpy as np
    import torch

    if kind == "torch":
        from torch.utils.tensorboard import SummaryWriter
    else:
        from statbus.pipeline import SummaryWriter
    if kind == "statbus-hparams":
        hparams_calls(SummaryWriter, path)
    else:
        plugin_data_calls(SummaryWriter(path), np, torch)


if __name__ == "__main__":
    main(*sys.argv[1:])
