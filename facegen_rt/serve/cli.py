"""`facegen-rt serve`: start the drag editor on a local port (loopback by default)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from facegen_rt.drag.cli import add_generator_arguments, generator_from_args


def parse_args(argv):
    p = argparse.ArgumentParser(prog="facegen-rt serve", description=__doc__)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default loopback; anything else exposes the "
                        "editor to the network, without authentication)")
    p.add_argument("--port", type=int, default=8765)
    add_generator_arguments(p)
    p.add_argument("--inversion-steps", type=int, default=100,
                   help="optimization steps when a real image is uploaded")
    p.add_argument("--lr", type=float, default=None, help="drag Adam learning rate")
    return p.parse_args(argv)


def serve_main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvicorn
    except ImportError:
        print("facegen-rt serve needs uvicorn and websockets: "
              "pip install 'facegen_rt[serve]'", file=sys.stderr)
        return 2
    from . import create_app

    if args.inversion_steps < 1:
        print("--inversion-steps must be >= 1", file=sys.stderr)
        return 2
    G = generator_from_args(args, "facegen-rt serve")
    if G is None:
        return 2
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this port can use the "
              "editor", file=sys.stderr)
    session_kwargs = {} if args.lr is None else {"lr": args.lr}
    app = create_app(G, generator_name=args.weights or "bundled SynthFace 256^2",
                     inversion_steps=args.inversion_steps, **session_kwargs)
    print(f"drag editor: http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws="websockets-sansio")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
