"""Shared fixtures: the suite reruns on CUDA when a GPU is present (device fixture), and runs
torch on one intra-op thread: the tensors are small, and on a 2-core machine a second thread
spins more than it computes (the quick curves take 3x less CPU time with one). Ray workers,
MuJoCo's thread pool and subprocesses set their own threads."""
import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param
