"""The growth of a file being decoded, as the writer follows it: what a Growth accepts, and how
it crosses the pipe between the client and the helper (real pipes, real threads)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from flasher.errors import Cancelled, ImageError, WriterProtocolError
from flasher.events import CancelToken
from flasher.writer.growing import Growth, feed_growth, pump_growth
from flasher.writer.protocol import (
    ImageSpec,
    SourceKind,
    TargetSpec,
    WriteRequest,
    decode_request,
    encode_request,
)

SIZE = 64 * 4096


def _through_pipe(lines: list[bytes]) -> Growth:
    """A Growth fed by `feed_growth` from a pipe carrying `lines`, then closed."""
    read_end, write_end = os.pipe()
    for line in lines:
        os.write(write_end, line)
    os.close(write_end)
    growth = Growth(SIZE)
    try:
        feed_growth(read_end, growth, CancelToken())
    finally:
        os.close(read_end)
    return growth


def _line(value: object) -> bytes:
    return json.dumps(value).encode() + b"\n"


def test_what_the_pump_sends_the_feeder_rebuilds() -> None:
    source = Growth(SIZE)
    source.add([(0, 4096), (8192, 8192)])
    source.add([(32768, 4096)])
    source.complete([(0, 40960)])
    read_end, write_end = os.pipe()
    pump = threading.Thread(target=pump_growth, args=(source, write_end, CancelToken()))
    pump.start()
    pump.join()
    os.close(write_end)
    copy = Growth(SIZE)
    feed_growth(read_end, copy, CancelToken())
    os.close(read_end)
    assert copy.written() == [(0, 4096), (8192, 8192), (32768, 4096)]
    assert copy.ranges == ((0, 40960),)


def test_a_pipe_that_ends_before_the_ranges_fails_as_a_truncated_image() -> None:
    growth = _through_pipe([_line({"data": [[0, 4096]]})])
    with pytest.raises(ImageError) as caught:
        growth.wait(1)
    assert caught.value.problem is not None and caught.value.problem.value == "truncated"


@pytest.mark.parametrize(
    "lines",
    [
        [_line({"data": [[8192, 4096]]}), _line({"data": [[0, 4096]]})],  # goes backwards
        [_line({"data": [[0, SIZE + 4096]]})],  # past the image's end
        [_line({"ranges": [[0, 4096]], "extra": 1})],  # an unknown field
        [b"not json\n"],
    ],
    ids=["backwards", "past-the-end", "unknown-field", "not-json"],
)
def test_a_bad_growth_line_fails_with_a_protocol_error(lines: list[bytes]) -> None:
    growth = _through_pipe(lines)
    with pytest.raises(WriterProtocolError):
        growth.wait(0)


def test_waiting_followers_get_each_extent_once_and_then_completion() -> None:
    growth = Growth(SIZE)
    growth.add([(0, 4096)])
    batch, cursor, complete = growth.wait(0)
    assert (batch, complete) == ([(0, 4096)], False)
    growth.add([(4096, 4096)])
    growth.complete(None)
    assert growth.wait(cursor) == ([(4096, 4096)], 2, True)


def test_a_cancel_ends_a_wait_for_data() -> None:
    cancel = CancelToken()
    threading.Timer(0.05, cancel.cancel).start()
    with pytest.raises(Cancelled):
        Growth(SIZE).wait(0, cancel)


def _follow_request(**changes: object) -> WriteRequest:
    fields: dict[str, object] = {
        "targets": (TargetSpec("/dev/sdz", "8:16", 2 * SIZE),),
        "image": ImageSpec(SIZE, SourceKind.FOLLOW),
        "overlay": ((4096, 512),),
    }
    fields.update(changes)
    return WriteRequest(**fields)  # type: ignore[arg-type]


def test_a_follow_request_carries_the_image_the_overlay_and_the_growth_pipe() -> None:
    request = decode_request(encode_request(_follow_request()).rstrip(b"\n"))
    assert request.image.source is SourceKind.FOLLOW
    assert request.fd_count == 3


def test_a_follow_request_with_ranges_is_refused() -> None:
    line = encode_request(_follow_request(ranges=((0, 4096),))).rstrip(b"\n")
    with pytest.raises(WriterProtocolError, match="followed image"):
        decode_request(line)
