"""Shared test settings.

Tests use tiny models, where torch's intra-op threads cost more than they save, and on a busy
2-core machine they slow small ops down by 10x or more. One thread keeps the suite fast and steady.
"""

import torch

torch.set_num_threads(1)
