"""The exception hierarchy users catch (python/lightclip/errors.py, rust/py/src/errors.rs)."""

from __future__ import annotations

import pytest
import torch

import lightclip


def test_hierarchy_lets_users_catch_builtins_or_ours() -> None:
    assert issubclass(lightclip.InvalidInputError, ValueError)
    assert issubclass(lightclip.InvalidInputError, lightclip.LightclipError)
    assert issubclass(lightclip.InvalidDtypeError, TypeError)
    assert issubclass(lightclip.InvalidDtypeError, lightclip.LightclipError)
    assert issubclass(lightclip.DataError, lightclip.LightclipError)
    assert not issubclass(lightclip.DataError, ValueError)


def test_rust_raises_the_python_classes_themselves() -> None:
    # The extension imports the classes by name; a raised error must be that very class, not
    # a look-alike defined in Rust.
    with pytest.raises(lightclip.InvalidInputError) as info:
        lightclip.soft_labels(torch.zeros(2, 3), 0.5)
    assert type(info.value) is lightclip.errors.InvalidInputError
    assert "invalid `logits`" in str(info.value)
