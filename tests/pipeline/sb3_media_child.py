"""A real SB3 PPO whose callback logs a Video, a Figure and an Image each rollout (and an HParam at
its start), through StatbusOutputFormat and SB3's own TensorBoardOutputFormat side by side:
``python sb3_media_child.py STATBUS_FOLDER TORCH_FOLDER TIMESTEPS``."""

from __future__ import annotations

import sys

EXCLUDE = ("stdout", "log", "json", "csv")
HPARAMS = {"algorithm": "PPO", "n_steps": 256, "gamma": 0.99, "normalize": False}
PLACEHOLDERS = {"hp/placeholder": 0.0, "hp/another": 0}
"""SB3's HParam needs metric names whose values are logged elsewhere: these never are."""
MEDIA_TAGS = ("media/video", "media/figure", "media/image")


def main(statbus_folder: str, torch_folder: str, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Figure, HParam, Image, Logger, TensorBoardOutputFormat, Video

    from statbus.pipeline.sb3 import StatbusOutputFormat

    torch.set_num_threads(1)

    class Media(BaseCallback):
        def _on_training_start(self) -> None:
            self.logger.record("hparams", HParam(HPARAMS, PLACEHOLDERS), exclude=EXCLUDE)

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            rng = np.random.default_rng(self.num_timesteps)
            frames = torch.from_numpy(rng.integers(0, 256, (1, 6, 3, 16, 16), dtype=np.uint8))
            self.logger.record("media/video", Video(frames, fps=8), exclude=EXCLUDE)
            figure = plt.figure(figsize=(2, 1.5), dpi=40)
            figure.add_subplot(1, 1, 1).plot(rng.random(8))
            self.logger.record("media/figure", Figure(figure, close=True), exclude=EXCLUDE)
            image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
            self.logger.record("media/image", Image(image, "HWC"), exclude=EXCLUDE)

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=64, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.set_logger(Logger(statbus_folder, [StatbusOutputFormat(statbus_folder), TensorBoardOutputFormat(torch_folder)]))
    model.learn(total_timesteps=steps, callback=Media())
    model.logger.close()
    print("PPO done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
