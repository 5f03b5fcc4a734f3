# Copyright 2026 vpr_ros maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""rosbag2 reading and writing with ``rosbags`` (no ROS install): the core of play and record.

Both storage plugins are supported: ``mcap`` (the default since ROS 2 Iron) and ``sqlite3``.
Messages travel as raw CDR bytes, so play and record never deserialise what they do not need;
:func:`header_stamp_ns` reads a header stamp straight from the bytes.

Convention:
    - times are integer nanoseconds: ``log_time_ns`` is when the recorder received the message
      (the bag's own timestamp), ``stamp_ns`` is the message's ``header.stamp``;
    - message types are ROS 2 names, ``sensor_msgs/msg/NavSatFix``; definitions come from the
      ROS 2 Kilted typestore of rosbags.

A truncated mcap file (a recorder killed, a disk full) has no footer, and rosbags refuses it;
:func:`open_reader` then reads a copy of its complete records with a new footer (rosbags scans
such a file record by record) and warns how much of the file that is.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
import logging
import os
from pathlib import Path
import shutil
import struct
import tempfile
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from vpr_ros.config import Config, option
from vpr_ros.errors import DataError

FIX_TYPE = 'sensor_msgs/msg/NavSatFix'
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
CLOCK_TYPE = 'rosgraph_msgs/msg/Clock'
STORAGES = ('mcap', 'sqlite3')
BAG_VERSION = 9
MCAP_MAGIC = b'\x89MCAP0\r\n'
# A footer that points to no summary section: readers scan the records instead.
MCAP_BARE_FOOTER = b'\x02' + struct.pack('<Q', 20) + bytes(20) + MCAP_MAGIC
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlayConfig(Config):
    """How ``vpr-ros play`` publishes a bag."""

    rate: float = option(1.0, 'playback speed factor (2.0 = twice as fast)', min=1e-3)
    loop: bool = option(False, 'start again from the beginning at the end of the bag')
    clock: bool = option(False, 'publish /clock from the bag log times (for use_sim_time)')
    qos: str = option('reliable', 'publisher QoS: reliable (keep-last depth) or sensor_data '
                      '(best effort, keep-last 5)', choices=('reliable', 'sensor_data'))
    depth: int = option(100, 'keep-last depth of the reliable publishers', min=1)
    wait_for_subscribers_s: float = option(
        0.0, 'before playing, wait up to this long until every topic has a subscriber', min=0.0)
    restamp: bool = option(False, 'map every header.stamp onto the playback wall clock (the '
                           'first message reads "now"), so recorded latency is real')


@dataclass(frozen=True)
class RecordConfig(Config):
    """How ``vpr-ros record`` subscribes and writes."""

    storage: str = option('mcap', 'rosbag2 storage plugin', choices=STORAGES)
    qos: str = option('auto', 'subscription reliability: auto (best effort when any publisher '
                      'is best effort, else reliable), reliable or best_effort',
                      choices=('auto', 'reliable', 'best_effort'))
    depth: int = option(100, 'keep-last depth of the subscriptions', min=1)
    discovery_period_s: float = option(0.2, 'how often to look for the requested topics',
                                       min=0.01)


class BagMessage(NamedTuple):
    """One message of a bag as raw CDR bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    rawdata: bytes


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """Return the rosbags typestore for ROS 2 Kilted (the distro of our wheels)."""
    from rosbags.typesys import get_typestore, Stores

    return get_typestore(Stores.ROS2_KILTED)


def header_stamp_ns(rawdata: bytes) -> int | None:
    """Read ``header.stamp`` from the CDR bytes of a message whose first field is a Header.

    Returns None when the bytes do not start with a CDR encapsulation header.
    """
    if len(rawdata) < 12 or rawdata[0] != 0 or rawdata[1] not in (0, 1):
        return None
    order = '<' if rawdata[1] == 1 else '>'
    sec, nanosec = struct.unpack_from(order + 'iI', rawdata, 4)
    return sec * 1_000_000_000 + nanosec


@functools.lru_cache(maxsize=None)
def has_header(msgtype: str) -> bool:
    """Tell whether ``msgtype``'s first field is a ``std_msgs/Header`` (so it has a stamp)."""
    try:
        fields = typestore().fielddefs[msgtype][1]
    except KeyError:
        return False
    return bool(fields) and fields[0][0] == 'header' and \
        fields[0][1][1] == 'std_msgs/msg/Header'


def shift_header_stamp(rawdata: bytes, offset_ns: int) -> bytes:
    """Return CDR bytes of a message with a Header whose ``header.stamp`` is moved by offset_ns.

    The bytes are patched in place of a copy (no deserialisation); unchanged when they do not
    start with a CDR encapsulation header.
    """
    stamp = header_stamp_ns(rawdata)
    if stamp is None:
        return bytes(rawdata)
    order = '<' if rawdata[1] == 1 else '>'
    sec, nanosec = divmod(stamp + int(offset_ns), 1_000_000_000)
    out = bytearray(rawdata)
    struct.pack_into(order + 'iI', out, 4, sec, nanosec)
    return bytes(out)


def _bag_dir(path: Path) -> Path:
    path = Path(path)
    if path.is_file():  # a .mcap/.db3 or metadata.yaml inside the bag directory
        path = path.parent
    if not (path / 'metadata.yaml').is_file():
        raise DataError(f'{path} is not a rosbag2 directory (no metadata.yaml)')
    return path


def _records(f: Any, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(opcode, start, end)`` of the complete MCAP records in ``[start, stop)``."""
    pos = start
    while pos + 9 <= stop:
        f.seek(pos)
        head = f.read(9)
        end = pos + 9 + struct.unpack('<Q', head[1:])[0]
        if end > stop:
            return
        yield head[0], pos, end
        pos = end


def write_readable_mcap(path: Path, out: Path) -> int:
    """Write the complete records of a truncated MCAP file to ``out``; return the bytes kept.

    Complete records are copied; of a chunk cut off by the truncation, the complete records
    inside it are kept when the chunk is not compressed (the default of ``ros2 bag record``).
    A footer without a summary section ends the copy, so readers scan it record by record.
    """
    size = path.stat().st_size
    with open(path, 'rb') as f, open(out, 'wb') as dst:
        if f.read(8) != MCAP_MAGIC:
            raise DataError(f'{path} is not an MCAP file (bad magic)')
        dst.write(MCAP_MAGIC)
        kept = pos = 8
        for op, start, end in _records(f, 8, size):
            if op == 0x02:   # a footer
                break
            f.seek(start)
            dst.write(f.read(end - start))
            kept = pos = end
        if pos + 9 + 36 < size:
            f.seek(pos)
            head = f.read(9 + 28)
            f.seek(pos + 9 + 28)
            (name_len,) = struct.unpack('<I', f.read(4))
            if head[0] == 0x06 and name_len == 0:   # an uncompressed chunk, cut off
                inner = pos + 9 + 28 + 4 + 8
                for _, start, end in _records(f, inner, size):
                    f.seek(start)
                    dst.write(f.read(end - start))
                    kept = end
        dst.write(MCAP_BARE_FOOTER)
    return kept


def _truncated_mcaps(bag: Path) -> list[Path]:
    out = []
    for path in sorted(bag.glob('*.mcap')):
        with open(path, 'rb') as f:
            f.seek(max(0, path.stat().st_size - len(MCAP_MAGIC)))
            if f.read() != MCAP_MAGIC:
                out.append(path)
    return out


def _readable_copy(bag: Path, truncated: list[Path]) -> Path:
    """Copy ``bag`` to a temporary directory, the truncated files cut to complete records."""
    copy = Path(tempfile.mkdtemp(prefix=f'{bag.name}.readable-'))
    try:
        for path in bag.iterdir():
            if path.is_file() and path not in truncated:
                os.symlink(path.resolve(), copy / path.name)
        for path in truncated:
            kept = write_readable_mcap(path, copy / path.name)
            size = path.stat().st_size
            log.warning('%s is truncated (no footer): reading its complete records, %d of %d '
                        'bytes (%.0f %%)', path, kept, size, 100.0 * kept / max(1, size))
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


def open_reader(path: Path) -> Any:
    """Open a rosbag2 directory with rosbags' AnyReader (Kilted types as the default store).

    A truncated mcap file is read up to its last complete record, with a warning.
    """
    from rosbags.highlevel import AnyReader
    import weakref

    bag = _bag_dir(path)
    try:
        reader = AnyReader([bag], default_typestore=typestore())
        reader.open()
        return reader
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types; name the bag
        error = exc
    truncated = _truncated_mcaps(bag)
    if not truncated:
        raise DataError(f'cannot open bag {bag}: {error}')
    copy = _readable_copy(bag, truncated)
    try:
        reader = AnyReader([copy], default_typestore=typestore())
        reader.open()
    except Exception as exc:  # noqa: BLE001
        shutil.rmtree(copy, ignore_errors=True)
        raise DataError(f'cannot open bag {bag} ({error}), nor its readable part: {exc}'
                        ) from None
    weakref.finalize(reader, shutil.rmtree, copy, True)
    return reader


def bag_topics(path: Path) -> dict[str, str]:
    """Return ``{topic: message type}`` of every topic in a bag."""
    reader = open_reader(path)
    try:
        return {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()


def select_connections(reader: Any, topics: Sequence[str] | None) -> list[Any]:
    """Pick the connections of ``topics`` (all when None); a missing topic is a DataError."""
    if not topics:
        return list(reader.connections)
    present = sorted({c.topic for c in reader.connections})
    missing = [t for t in topics if t not in present]
    if missing:
        raise DataError(f'topic(s) {missing} not in the bag; its topics: {present}')
    return [c for c in reader.connections if c.topic in set(topics)]


def read_messages(path: Path, topics: Sequence[str] | None = None, *,
                  progress: bool = False) -> Iterator[BagMessage]:
    """Yield the messages of ``topics`` (all when None) in log-time order, as raw bytes."""
    reader = open_reader(path)
    try:
        conns = select_connections(reader, topics)
        iterator = reader.messages(connections=conns)
        if progress:
            from tqdm import tqdm

            total = sum(c.msgcount for c in conns)
            iterator = tqdm(iterator, total=total, unit='msg', desc=Path(path).name)
        for conn, log_time, raw in iterator:
            yield BagMessage(conn.topic, conn.msgtype, int(log_time), bytes(raw))
    finally:
        reader.close()


def deserialize(rawdata: bytes, msgtype: str) -> Any:
    """Deserialise CDR bytes into a rosbags message object (attribute access like ROS)."""
    return typestore().deserialize_cdr(rawdata, msgtype)


def serialize(msg: Any, msgtype: str) -> bytes:
    """Serialise a rosbags message object to CDR bytes (what rclpy publishes)."""
    return bytes(typestore().serialize_cdr(msg, msgtype))


def message_class(msgtype: str) -> Any:
    """Return the rosbags dataclass of ``msgtype`` (e.g. to build messages for a test bag)."""
    try:
        return typestore().types[msgtype]
    except KeyError:
        raise DataError(f'unknown message type {msgtype!r} (not in the ROS 2 Kilted '
                        f'typestore)') from None


def playback_offsets_s(log_times_ns: Sequence[int] | np.ndarray, rate: float) -> np.ndarray:
    """Seconds after the start at which each message is due when playing at ``rate``."""
    times = np.asarray(log_times_ns, np.int64)
    if times.size == 0:
        return np.zeros(0)
    return (times - times[0]).astype(np.float64) / 1e9 / rate


class BagWriter:
    """Write raw CDR messages into a new rosbag2 directory; never overwrites one.

    Use as a context manager, or call :meth:`close` (which makes the bag readable: the
    metadata is written on close).
    """

    def __init__(self, path: Path, *, storage: str = 'mcap') -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise DataError(f'storage {storage!r} is not one of {list(STORAGES)}')
        self.path = Path(path)
        if self.path.exists():
            raise DataError(f'{self.path} exists already, not overwriting')
        if not self.path.parent.is_dir():
            raise DataError(f'folder {self.path.parent} of the output bag does not exist')
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic before writing to it; its type must be in the Kilted typestore."""
        if topic in self._connections:
            return
        message_class(msgtype)  # clear error for an unknown type
        self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                               typestore=typestore())
        self.counts[topic] = 0

    def write(self, topic: str, log_time_ns: int, rawdata: bytes) -> None:
        """Append one message of a declared topic."""
        self._writer.write(self._connections[topic], int(log_time_ns), rawdata)
        self.counts[topic] += 1

    def write_message(self, topic: str, log_time_ns: int, msg: Any) -> None:
        """Serialise a rosbags message object and append it (declaring the topic if needed)."""
        msgtype = msg.__msgtype__
        self.add_topic(topic, msgtype)
        self.write(topic, log_time_ns, serialize(msg, msgtype))

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml); safe to call twice."""
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> 'BagWriter':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
