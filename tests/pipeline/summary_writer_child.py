"""Child processes of the SummaryWriter / SB3 tests (run as scripts, never collected)."""

from __future__ import annotations

import json
import os
import sys
import time


def calls(writer, np, hparams_name: str = "run_name") -> None:
    """The call sequence both torch's writer and statbus's get."""
    for step in range(10):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_scalar("charts/lr", 0.001 * step, global_step=step)
        if step % 3 == 0:
            writer.add_scalars("train/losses", {"policy": step * 0.5, "value": -step * 0.25}, step)
    writer.add_histogram("weights", np.linspace(-1.0, 1.0, 101) ** 3, 10)
    writer.add_text("notes", "hello **world**", 11)
    writer.add_hparams({"lr": 0.01, "batch": 32}, {"hp/score": 0.5}, **{hparams_name: "hp"})
    writer.add_scalar("loss", 0.05, 12)
    writer.close()


def sequence(kind: str, log_dir: str) -> None:
    import numpy as np

    if kind == "torch":
        from torch.utils.tensorboard import SummaryWriter
    elif kind == "tensorboardX":
        from tensorboardX import SummaryWriter
    else:
        from statbus.pipeline import SummaryWriter
    calls(SummaryWriter(log_dir), np, "name" if kind == "tensorboardX" else "run_name")


def rank(log_dir: str, index: int, barrier: str, steps: int) -> None:
    """One of several processes logging one tag at the same steps."""
    import statbus.pipeline as sp
    from statbus.pipeline import SummaryWriter

    writer = SummaryWriter(log_dir)
    # The constructor returned once the collector had the join: a member from here on.
    assert sp.client_counters()["frames_acked"] >= 1, sp.client_counters()
    open(f"{barrier}.{index}", "w").close()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for waiting
    from waiting import wait_for

    wait_for(lambda: os.path.exists(barrier), 120, what="the barrier", interval=0.01)
    for step in range(steps):
        writer.add_scalar("reward", index * 100.0 + step, step)
    writer.close()


def many(log_dir: str, index: int, delay: float, steps: int) -> None:
    """One of many processes started together: a writer, ``delay`` s of other work, then its steps 20 ms apart."""
    from statbus.pipeline import SummaryWriter

    writer = SummaryWriter(log_dir)
    time.sleep(delay)  # paces the scenario on purpose: the training's own start-up, before its first step
    for step in range(steps):
        value = index * 1000.0 + step
        writer.add_scalar("charts/x", value, step)
        writer.add_histogram("charts/h", [value], step)  # TensorBoard keeps a histogram's count
        time.sleep(0.02)  # paces the scenario on purpose: the steps 20 ms apart
    writer.close()


def no_close(log_dir: str) -> None:
    """Logs three steps and exits without flush() or close(): exit closes the last step."""
    from statbus.pipeline import SummaryWriter

    writer = SummaryWriter(log_dir)
    for step in range(3):
        writer.add_scalar("loss", float(step), step)


def ppo(folder: str, dumps_path: str, steps: int) -> None:
    """A real SB3 PPO on CartPole-v1 with the statbus output format (and a record of every dump)."""
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger

    from statbus.pipeline.sb3 import StatbusOutputFormat

    torch.set_num_threads(1)

    class Dumps(KVWriter):
        def __init__(self) -> None:
            self.file = open(dumps_path, "w", encoding="utf-8")

        def write(self, key_values, key_excluded, step=0) -> None:
            kept = {k: float(v) for k, v in key_values.items()
                    if not (key_excluded.get(k) and "tensorboard" in key_excluded[k]) and isinstance(v, (int, float, np.integer, np.floating))}
            self.file.write(json.dumps({"step": step, "values": kept}) + "\n")
            self.file.flush()

        def close(self) -> None:
            self.file.close()

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=64, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.set_logger(Logger(folder, [HumanOutputFormat(sys.stdout), StatbusOutputFormat(folder), Dumps()]))
    model.learn(total_timesteps=steps)
    model.logger.close()
    print("PPO done", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "sequence":
        sequence(args[0], args[1])
    elif mode == "rank":
        rank(args[0], int(args[1]), args[2], int(args[3]))
    elif mode == "many":
        many(args[0], int(args[1]), float(args[2]), int(args[3]))
    elif mode == "no_close":
        no_close(args[0])
    elif mode == "ppo":
        ppo(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
