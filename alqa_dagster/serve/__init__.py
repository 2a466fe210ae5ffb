"""``alqa serve``: the annotators' front door, an ASGI app with MONAI Label's endpoints and a web worklist.

- :mod:`.app`: the app, its guards (body limits, ``--no-auth`` on loopback only) and :func:`.app.run`;
- :mod:`.auth`: MONAI Label's login over alqa's annotator credentials;
- :mod:`.monai`: the endpoints 3D Slicer's MONAI Label module calls;
- :mod:`.worklist`: the web worklist's API (queue, leases, verdicts, grades); its page is ``static/``;
- :mod:`.viewer`: the worklist's NiiVue viewer and editor: a case's manifest, volumes, attention regions, 3D Slicer's link;
- :mod:`.leases`: which reader holds which case, until when (every lease rule in one place);
- :mod:`.headers`: Content-Security-Policy, framing and no-store caching on every answer;
- :mod:`.ids`, :mod:`.files`, :mod:`.uploads`, :mod:`.state`: image ids, served files, streamed uploads, per-process state.

Like the CLI it is an adapter over alqa_core, and it imports no dagster,
torch or MONAI (an import-linter contract and a runtime probe check it).
"""
