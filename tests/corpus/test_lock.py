"""The output directory's lock: a second holder is refused naming the first; a killed holder blocks no one."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from vggish_tf2.corpus.lock import LOCK_NAME, OutputLock
from vggish_tf2.errors import OutputInUseError

HOLD_LOCK = """
import sys, time
from vggish_tf2.corpus.lock import OutputLock
lock = OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_lock_in_one_process_refuses_a_second_open_and_is_released(tmp_path):
    first = OutputLock(tmp_path).acquire()
    with pytest.raises(OutputInUseError, match=rf"pid {os.getpid()} on host"):
        OutputLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with OutputLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_held_by_another_process_refuses_and_a_killed_holder_blocks_no_one(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputInUseError, match=rf"another vggish-tf2 run is writing here \(pid {holder.pid} on "
                                                   rf"host {socket.gethostname()}, started .*\)"):
            OutputLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # left behind by the kill, and no longer locked
    with OutputLock(tmp_path):
        pass
    assert not (tmp_path / LOCK_NAME).exists()
