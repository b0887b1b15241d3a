import os
# The Hugging Face hub is unreachable in CI: fail at once instead of retrying for ~25 s.
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

# `pytest -n 2` (pytest-xdist) runs the suite on two workers: each keeps to one core (torch's default, every core in each
# process, oversubscribes them and its threads spin), and the long tests start first so that none is left running alone.
if os.environ.get('PYTEST_XDIST_WORKER'): os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'

def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)    # stable: otherwise in collection order
