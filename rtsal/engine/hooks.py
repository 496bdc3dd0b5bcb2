"""Forward hooks that record scale-end activations during the one forward pass of each frame."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from rtsal.types import LayerInfo


class ActivationRecorder:
    """Context manager that records the outputs of ``layers`` in every forward pass of ``model``.

    Hooks are registered on enter and removed on exit, also when an exception escapes. Recorded tensors are
    ``detach()``ed views on the model's device (no copy, no host transfer) and are dropped by :meth:`pop`.

    With ``grad_layer`` set (an index into ``layers``) and :attr:`track_grad` true, that layer's output is
    replaced by a leaf that requires grad and grad mode is switched on for the rest of the forward pass, so a
    backward pass from the logits covers only the layers after it (the head). The caller's ``no_grad``
    context restores grad mode when it exits.
    """

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], grad_layer: int | None = None) -> None:
        self.model = model
        self.layers = list(layers)
        self.grad_layer = grad_layer
        self.track_grad = False
        self._handles: list[RemovableHandle] = []
        self._counts: dict[str, int] = {}
        self._store: list[Tensor | None] = [None] * len(self.layers)
        modules = dict(model.named_modules())
        self._wanted: dict[str, dict[int, int]] = {}  # module name -> {call number: slot}
        for slot, info in enumerate(self.layers):
            if info.name not in modules:
                raise ValueError(f"layer {info.name!r} is not a module of the model")
            self._wanted.setdefault(info.name, {})[info.call] = slot
        self._modules = {name: modules[name] for name in self._wanted}

    def __enter__(self) -> ActivationRecorder:
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._reset))
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook and drop what was recorded."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._store = [None] * len(self.layers)

    def _reset(self, module: nn.Module, args: object) -> None:
        self._counts.clear()
        self._store = [None] * len(self.layers)

    def _make_hook(self, name: str):
        wanted = self._wanted[name]

        def hook(module: nn.Module, args: object, out: Tensor) -> Tensor | None:
            call = self._counts.get(name, 0)
            self._counts[name] = call + 1
            slot = wanted.get(call)
            if slot is None:
                return None
            if self.track_grad and slot == self.grad_layer:
                leaf = out.detach().requires_grad_(True)
                self._store[slot] = leaf
                torch.set_grad_enabled(True)
                return leaf.clone()  # a non-leaf, so in-place ops after the layer (e.g. ReLU) stay legal
            self._store[slot] = out.detach()
            return None

        return hook

    def pop(self) -> list[Tensor]:
        """The tensors recorded in the last forward pass, in layer order; clears the store."""
        store, self._store = self._store, [None] * len(self.layers)
        missing = [self.layers[i].name for i, t in enumerate(store) if t is None]
        if missing:
            raise RuntimeError(f"layer {missing[0]!r} produced no output in the last forward pass")
        return store  # type: ignore[return-value]
