"""The experiments' tests run torch on one thread: their tensors are small, and on a 2-core
machine a second intra-op thread spins more than it computes (the quick curves take 3x less CPU
time with one thread). Ray workers and subprocesses set their own threads."""
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
