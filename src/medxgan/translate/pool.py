"""The CycleGAN image history buffer (Shrivastava et al. 2017, as in Zhu et al.'s implementation).

Discriminators are updated with a mix of the newest fakes and fakes from earlier generator states,
which damps oscillation. The pool's random choices come from its own torch.Generator, whose state is
part of the checkpoint, so a resumed run draws the same choices as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """`query(images)` -> images for the discriminator (N x C x H x W, same shape).

    * size 0: returns the input unchanged (no buffer).
    * until the pool holds `size` images: stores each image and returns it.
    * once full: per image, with probability 0.5 returns a randomly chosen stored image and stores the
      new one in its place; otherwise returns the new image.
    Stored images are detached copies kept on the device of the input.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand((), generator=self.gen).item() < 0.5:
                idx = int(torch.randint(0, self.size, (), generator=self.gen).item())
                out.append(self.images[idx].clone())
                self.images[idx] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "images": torch.cat(self.images, 0).cpu() if self.images else torch.zeros(0),
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.size = int(state["size"])
        imgs = state["images"]
        self.images = [imgs[i : i + 1].to(device) for i in range(imgs.shape[0])] if imgs.numel() else []
        self.gen.set_state(state["gen"].to(torch.uint8))
