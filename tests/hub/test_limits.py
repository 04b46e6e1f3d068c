from hub.limits import TokenBucket


def test_burst_then_rate():
    bucket = TokenBucket(rate=20, burst=40)
    now = bucket.stamp
    assert all(bucket.take(now) == 0 for _ in range(40))
    wait = bucket.take(now)
    assert 1 <= wait <= 50
    assert bucket.take(now + 0.051) == 0  # one token back after 1/20 s


def test_refill_caps_at_burst():
    bucket = TokenBucket(rate=10, burst=5)
    now = bucket.stamp + 100
    assert sum(1 for _ in range(10) if bucket.take(now) == 0) == 5
