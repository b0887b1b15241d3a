import os
# The Hugging Face hub is unreachable in CI: fail at once instead of retrying for ~25 s.
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

# `pytest -n 2` (pytest-xdist) runs the suite on two workers: each keeps to one core (torch's default, every core in each
# process, oversubscribes them and its threads spin), and the long tests start first so that none is left running alone.
if os.environ.get('PYTEST_XDIST_WORKER'): os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'

def pytest_collection_modifyitems(config, items):
    "The longest first (`@pytest.mark.slow(minutes=N)`, about N minutes on 2 cores); otherwise in collection order."
    items.sort(key=lambda item: -(m.kwargs.get('minutes', 1) if (m := item.get_closest_marker('slow')) else 0))

def pytest_configure(config):
    # xdist hands each worker a quarter of its share at once by default: the tests queued behind the longest would wait
    # for it while the other worker idles. Two at a time keeps both busy to the end.
    if getattr(config.option, 'maxschedchunk', False) is None: config.option.maxschedchunk = 2
