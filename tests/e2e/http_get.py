#!/usr/bin/env python3
"""GETs a URL and writes the body to stdout.

  http_get.py URL [TOKEN [RANGE]]

Sends "Authorization: Bearer TOKEN" when TOKEN is given (and not empty),
and "Range: RANGE" (e.g. bytes=0-99) when RANGE is. Prints the status code
to stderr and exits 0 for 200 and 206, 1 for another status, 2 when the
server cannot be reached.
"""
import sys
import urllib.error
import urllib.request


def main():
    request = urllib.request.Request(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2]:
        request.add_header("Authorization", "Bearer " + sys.argv[2])
    if len(sys.argv) > 3:
        request.add_header("Range", sys.argv[3])
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            sys.stdout.buffer.write(response.read())
            print(response.status, file=sys.stderr)
            return 0
    except urllib.error.HTTPError as e:
        sys.stdout.buffer.write(e.read())
        print(e.code, file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"cannot reach {sys.argv[1]}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
