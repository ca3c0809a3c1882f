import pytest

from sim_hosts import small_host


@pytest.fixture
def kernel(tmp_path):
    return small_host(tmp_path).kernel()


@pytest.fixture
def events(kernel):
    seen = []
    kernel.subscribe(seen.append)
    return seen
