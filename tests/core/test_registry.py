"""Lazy domain hooks: imported when called, their failures named."""

from __future__ import annotations

import pytest
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.registry import Lazy, lazy, load_domains, resolve_hook


def test_lazy_hook_calls_and_resolves_its_target():
    join = lazy("os.path:join")
    assert join("a", "b") == "a/b"
    assert resolve_hook(join).__name__ == "join" and resolve_hook(len) is len


@pytest.mark.parametrize("target", ["no_such_module_here:run", "os.path:no_such_function"])
def test_a_broken_lazy_hook_names_its_target(target: str):
    with pytest.raises(DomainVLMError, match=target):
        lazy(target)()


def test_lazy_needs_module_and_attribute():
    with pytest.raises(ValueError, match="package.module:attribute"):
        lazy("os.path.join")


def test_every_lazy_hook_of_the_installed_domains_resolves():
    """A misspelt "module:function" would only fail when its command runs; catch it here."""
    from dataclasses import fields

    checked = 0
    for plugin in load_domains().values():
        hooks = [getattr(plugin, field.name) for field in fields(plugin)]
        hooks += list(plugin.image_readers.values())
        for evaluation in plugin.evaluations.values():
            hooks += [evaluation.add_arguments, evaluation.run, evaluation.format_table]
        for hook in hooks:
            if isinstance(hook, Lazy):
                assert callable(hook.resolve()), hook.target
                checked += 1
    assert checked >= 30
