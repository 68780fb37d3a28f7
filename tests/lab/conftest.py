from tests.helpers.threads import one_thread  # noqa: F401  (autouse: the lab's float64 matmuls on one thread)
