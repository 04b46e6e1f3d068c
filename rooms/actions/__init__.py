"""The rooms app's rules, one module per subject: `chat` (rooms and membership), `jobs` (custom jobs,
bids, comments and queries) and `calls` (Agora calls and their timers). The socket rpc, HTTP and the
admin all call these functions."""
