"""The admin socket (a Unix socket per server, its protocol, its client, ``ctl``) and metrics."""
