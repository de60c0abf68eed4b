"""The error messages of the core, one template each, for both implementations.

``_core.pyx`` (compiled) and the pure-Python twin (``_twin_*.py``) raise the same
exceptions with the same words: both format them from these templates
(``str.format`` with the named fields shown), so the two cannot drift apart, and
``tests/core/test_differential.py`` checks that both raise the same words for the same
call. A message names the offending value, the rule and, where there is one, the
batch's value it was compared with.
"""

from __future__ import annotations

# -- arguments (both cores: the compiled core converts to C int64_t / double) -----------
NOT_AN_INTEGER = "{name} must be an integer, got {type}"
OUT_OF_RANGE = "{name} is out of range: {value!r}"
NOT_A_REAL_NUMBER = "{name} must be a real number, not {type}"
NEGATIVE_SECONDS = "{name} must be >= 0 seconds, got {value!r}"
QUEUE_CAPACITY = "capacity must be >= 0 (0 means unbounded), got {value}"
WINDOW_CAPACITY = "capacity must be >= 1, got {value}"
SAMPLES = "samples must be >= 1, got {value}"
NBYTES = "nbytes must be >= 0, got {value}"
MAX_SAMPLES = "max_samples must be >= 1, got {value}"
MAX_BYTES = "max_bytes must be >= 0 (0 means no byte budget), got {value}"
ROW_SCHEMA_SHAPE = "a row schema's sample shape is a tuple of 1 to 31 sizes, got {shape!r}"
ROW_SCHEMA_LENGTH = "a row schema's sample shape has sizes >= 0, got {shape!r}"
ROW_SCHEMA_LIMIT = ("a row schema's max_samples and max_bytes are >= 0 (0: no limit), got max_samples="
                    "{max_samples!r}, max_bytes={max_bytes!r}")

# -- RequestQueue -------------------------------------------------------------------------
QUEUE_CLOSED = "the queue is closed: put() refused"
QUEUE_CLOSED_WHILE_WAITING = "the queue was closed while put() waited for room"
QUEUE_FULL = "the queue is full ({capacity} requests)"
# {timeout} is the argument as the caller passed it.
QUEUE_STAYED_FULL = "the queue stayed full ({capacity} requests) for {timeout} s"
QUEUE_CLOSED_AND_EMPTY = "the queue is closed and empty"
QUEUE_LANES = "lanes must be >= 1, got {value}"
LANE_RANGE = "lane must be in [0, {lanes}), got {value}"
LANE_CHANGED = "lane {lane} is no longer the lane of this tag"
LANE_NOT_OPEN = "lane {lane} has not been opened"

# -- BatchAssembler.assemble ----------------------------------------------------------------
NO_ITEMS = "cannot assemble a batch of no items"
NOT_AN_ARRAY = "item {i} is {type}, expected a numpy array"
ZERO_DIMENSIONAL = "item {i} is a 0-d array; an item needs at least one dimension"
OBJECT_DTYPE = "item {i} has dtype {dtype}, which holds Python objects and cannot be batched"
DTYPE_MISMATCH = "item {i} has dtype {dtype} but the batch has dtype {batch_dtype}"
# A 1-D item is one sample: its whole shape is compared.
ROW_SHAPE_MISMATCH = "item {i} has shape {shape} but the batch has shape {batch_shape}"
SAMPLE_SHAPE_MISMATCH = (
    "item {i} has sample shape {sample_shape} (array shape {shape}) but the batch has "
    "sample shape {batch_shape}"
)
ZERO_SAMPLES = "item {i} has zero samples (array shape {shape})"

# -- assemble_padded (besides NO_ITEMS, NOT_AN_ARRAY, ZERO_DIMENSIONAL, OBJECT_DTYPE and
# DTYPE_MISMATCH above) ---------------------------------------------------------------------
PADDED_SHAPE_MISMATCH = (
    "item {i} has shape {shape} but item 0 has shape {batch_shape}: only the first axis "
    "(the length) may differ"
)
ZERO_LENGTH = "item {i} has length 0 (shape {shape}); a padded item needs at least one row"
PAD_VALUE = "pad_value {value!r} cannot be represented in dtype {dtype}"

# -- BatchAssembler.split -----------------------------------------------------------------
RESULT_WITHOUT_LENGTH = "the batch function returned {type}, expected a sequence of {total} results"
RESULT_LENGTH = "the batch function returned {n} results for a batch of {total} samples"
# The right length, but result[i] or result[a:b] raised {error} (TypeError, KeyError,
# IndexError: a set, a mapping, a __len__ that lies).
RESULT_NOT_INDEXABLE = (
    "the batch function returned {type} of length {n} for a batch of {total} samples, "
    "but it cannot be split by sample: indexing it raised {error}"
)

# -- StatsWindow ----------------------------------------------------------------------------
NOT_ONE_DIMENSIONAL = "{name} must be one-dimensional, got shape {shape}"
PERCENTILE_RANGE = "percentile q must be between 0 and 100, got {q!r}"
WINDOWS_AND_PERCENTILES = (
    "{windows} windows but {sequences} percentile sequences: one per window"
)
NOT_A_WINDOW = "expected StatsWindow objects, got {type}"

# -- Histogram ------------------------------------------------------------------------------
HISTOGRAM_BOUNDS = "bounds must be a non-empty sequence of finite numbers in increasing order, got {bounds!r}"

# -- compiled core only: failures the twin cannot have ------------------------------------
# (C allocations, and the assembler's guard against a second thread during a nogil copy)
NO_MEMORY_QUEUE = "cannot grow the request queue"
NO_MEMORY_DRAIN = "cannot drain the request queue"
NO_MEMORY_WINDOW = "cannot allocate a window of {capacity} values"
NO_MEMORY_HISTOGRAM = "cannot allocate a histogram of {n} buckets"
BATCH_TOO_LARGE = "a batch of {total} samples of {row_bytes} bytes is too large"
ASSEMBLER_BUSY = "BatchAssembler used from two threads at once"
