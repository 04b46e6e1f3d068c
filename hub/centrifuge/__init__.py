"""The Centrifuge client protocol (v2) at `/connection/websocket`, so the Centrifuge SDKs work
unchanged against the hub: see docs/clients.md."""
