"""Forward hooks that record scale-end activations during the one forward pass of each frame."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from rtsal.types import LayerInfo


class HookOwner:
    """Owns the forward hooks it registers; the one hook owner of rtsal (the engine's recorder, the comparison
    methods' layer taps and guided ReLUs all are one).

    A subclass registers its hooks in :meth:`attach` through :meth:`hook` / :meth:`pre_hook`. Entering the
    context attaches them (and removes what was attached if that fails); :meth:`close` (also on exit, on
    error) removes every handle. Nothing is left to ``__del__``.
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    @property
    def attached(self) -> bool:
        """True while the hooks are registered."""
        return bool(self._handles)

    def attach(self) -> None:
        """Register the hooks (subclasses)."""
        raise NotImplementedError

    def hook(self, module: nn.Module, fn: Callable[..., object]) -> None:
        """A forward hook on ``module``, owned here."""
        self._handles.append(module.register_forward_hook(fn))

    def pre_hook(self, module: nn.Module, fn: Callable[..., object]) -> None:
        """A forward pre-hook on ``module``, owned here."""
        self._handles.append(module.register_forward_pre_hook(fn))

    def __enter__(self) -> HookOwner:
        try:
            self.attach()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook registered here."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class ActivationRecorder(HookOwner):
    """Context manager that records the outputs of ``layers`` in every forward pass of ``model``.

    Hooks are registered on enter and removed on exit, also when an exception escapes. Recorded tensors are
    ``detach()``ed views on the model's device (no copy, no host transfer) and are dropped by :meth:`pop`.

    With ``grad_layer`` set (an index into ``layers``) and :attr:`track_grad` true, that layer's output is
    replaced by a leaf that requires grad and grad mode is switched on for the rest of the forward pass, so a
    backward pass from the logits covers only the layers after it (the head). The caller's ``no_grad``
    context restores grad mode when it exits.

    What is recorded is kept per thread (hooks run in the thread that calls the model), so several threads
    may run forward passes of the same model at once, each popping its own activations (the pipeline's
    inference streams share one model and one set of hooks).
    """

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], grad_layer: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self.grad_layer = grad_layer
        self.track_grad = False
        self._local = threading.local()  # .counts, .store: this thread's forward pass
        modules = dict(model.named_modules())
        self._wanted: dict[str, dict[int, int]] = {}  # module name -> {call number: slot}
        for slot, info in enumerate(self.layers):
            if info.name not in modules:
                raise ValueError(f"layer {info.name!r} is not a module of the model")
            self._wanted.setdefault(info.name, {})[info.call] = slot
        self._modules = {name: modules[name] for name in self._wanted}

    def __deepcopy__(self, memo: dict) -> ActivationRecorder:
        """A deep copy of a hooked model shares its recorder instead of copying it (its per-thread store
        cannot be copied); ``engine.graph.clean_copy`` then strips the recorder's hooks from the copy."""
        return self

    def attach(self) -> None:
        self.pre_hook(self.model, self._reset)
        for name, module in self._modules.items():
            self.hook(module, self._make_hook(name))

    def close(self) -> None:
        """Remove every hook and drop what was recorded."""
        super().close()
        self._local = threading.local()

    def _reset(self, module: nn.Module, args: object) -> None:
        self._local.counts = {}
        self._local.store = [None] * len(self.layers)

    def _make_hook(self, name: str):
        wanted = self._wanted[name]

        def hook(module: nn.Module, args: object, out: Tensor) -> Tensor | None:
            local = self._local
            if not hasattr(local, "store"):  # the module was called alone, without the model's pre-hook
                self._reset(module, args)
            counts = local.counts
            call = counts.get(name, 0)
            counts[name] = call + 1
            slot = wanted.get(call)
            if slot is None:
                return None
            if self.track_grad and slot == self.grad_layer:
                leaf = out.detach().requires_grad_(True)
                local.store[slot] = leaf
                torch.set_grad_enabled(True)
                return leaf.clone()  # a non-leaf, so in-place ops after the layer (e.g. ReLU) stay legal
            local.store[slot] = out.detach()
            return None

        return hook

    def pop(self) -> list[Tensor]:
        """The tensors recorded in the last forward pass, in layer order; clears the store."""
        store = getattr(self._local, "store", None) or [None] * len(self.layers)
        self._local.store = [None] * len(self.layers)
        missing = [self.layers[i].name for i, t in enumerate(store) if t is None]
        if missing:
            raise RuntimeError(f"layer {missing[0]!r} produced no output in the last forward pass")
        return store  # type: ignore[return-value]
