"""SB3's Video, Figure, Image and HParam through StatbusOutputFormat, against SB3's own
TensorBoardOutputFormat in the same real PPO run, read back with TensorBoard's reader."""

from __future__ import annotations

import io

import numpy as np

import sb3_media_child
from sb3_media_child import MEDIA_TAGS, PLACEHOLDERS
from summary_writer_helpers import accumulator, event_dirs, read_jsonl, run_child, start_collector, stop

TIMESTEPS = 1024
ROLLOUTS = TIMESTEPS // 256


def frames(encoded: bytes) -> list:
    """A PNG's pixels, or a GIF's frames as RGB."""
    from PIL import Image, ImageSequence

    with Image.open(io.BytesIO(encoded)) as image:
        return [np.asarray(frame.convert("RGB")).tolist() for frame in ImageSequence.Iterator(image)]


def media(directory: str) -> dict:
    acc = accumulator(directory)
    return {tag: [(e.step, (e.width, e.height), frames(e.encoded_image_string)) for e in acc.Images(tag)]
            for tag in acc.Tags()["images"]}


def hparams(directory: str) -> dict:
    """The hparams plugin's summaries of a run directory, parsed (map order is no part of them)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = accumulator(directory)
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
            for tag, content in acc.PluginTagToContent("hparams").items()}


def test_sb3_media_and_hparams_land_as_sb3s_tensorboard_format_writes_them(tmp_path):
    statbus_folder, torch_folder = tmp_path / "logs" / "PPO_1", tmp_path / "sb3" / "PPO_1"
    # write_raises raises on every write_stats, media_raises on every media value: training must not notice.
    collector = start_collector(str(tmp_path), "logs", plugins="tensorboard,write_raises,media_raises,media_recorder")
    try:
        out = run_child(str(statbus_folder), str(torch_folder), str(TIMESTEPS), script=sb3_media_child.__file__,
                        timeout=300).stdout
        stop(collector)
        log = collector.log()
    finally:
        collector.close()
    assert "PPO done" in out
    assert "plugin write_raises exited" in log and "WRITER_CRASH" in log, log
    assert "plugin media_raises exited" in log and "media_raises raises in add_media" in log, log

    got, want = media(str(statbus_folder)), media(str(torch_folder))
    assert sorted(got) == sorted(want) == sorted(MEDIA_TAGS)
    for tag in MEDIA_TAGS:
        assert len(want[tag]) == ROLLOUTS, tag
        assert [(step, size) for step, size, _ in got[tag]] == [(step, size) for step, size, _ in want[tag]], tag
        assert [pixels for *_, pixels in got[tag]] == [pixels for *_, pixels in want[tag]], tag

    # HParam: the same three summaries in the folder itself, and no scalars from the placeholders.
    assert event_dirs(str(statbus_folder)) == ["."]
    got_hparams = hparams(str(statbus_folder))
    assert sorted(got_hparams) == ["_hparams_/experiment", "_hparams_/session_end_info",
                                   "_hparams_/session_start_info"]
    assert got_hparams == hparams(str(torch_folder))
    scalars = accumulator(str(statbus_folder)).Tags()["scalars"]
    assert not set(scalars) & set(PLACEHOLDERS) and "rollout/ep_len_mean" in scalars

    recorded = [line for line in read_jsonl(str(tmp_path / "logs" / "zoo" / "media_recorder.jsonl"))
                if line["call"] == "add_media"]
    assert sorted({(line["kind"], line["tag"]) for line in recorded}) == \
        [("figure", "media/figure"), ("hparams", "_hparams_"), ("image", "media/image"), ("video", "media/video")]
    assert len(recorded) == 3 * ROLLOUTS + 1
