"""The jobs tier runs real torch on tiny models, several per module, on a machine it
shares: one torch thread per test module (also inside the runner, through
MODELOPS_THREADS), restored afterwards. The one definition of `one_thread`."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread for this module's tiny models, also inside the runner (restored)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELOPS_THREADS", "1")
        yield
    torch.set_num_threads(before)
