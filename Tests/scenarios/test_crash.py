"""Crash safety with real processes: SIGKILL while an MEK rotation and a DEK rotation (with its
background re-encryption) are in flight loses nothing (audit #40, #47).

crashlib.py runs one trial; bench/crash-trials runs the same trials in larger numbers.
"""
import random

import crashlib

TRIALS = 50


def test_every_entry_survives_sigkill_during_key_rotations(metacrypt_bin, kv_engine, tmp_path):
    setup = crashlib.prepare(tmp_path, binary=metacrypt_bin, engine=kv_engine)
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)

    results = [crashlib.run_trial(setup, index, rng, entries=40) for index in range(TRIALS)]

    report = crashlib.summary(results)
    print(f"\nseed {seed}\n{report}")
    assert all(r.ok for r in results), f"seed {seed}\n{report}"
    assert sum(r.intact for r in results) == 40 * TRIALS, report
    # With kills spread over 0-100 ms and an MEK rotation taking tens of ms, 50 trials always land in
    # more than one phase; if they all landed in one, the trials would not be testing what they claim.
    phases = {r.phase for r in results}
    assert len(phases) >= 2, f"every kill landed in the same phase ({phases}): the trials are not spread\n{report}"
    assert crashlib.MID_MEK in phases or crashlib.MID_REENCRYPTION in phases, report
