"""`make bench`: the speed goals of the one code, measured in one run on this machine.

    python -m loadtests.bench [--http-rounds 7] [--duration 2] [--warmup 1] [--generators 1] [--connections 32]
                              [--profile DIR]
    python -m loadtests.bench --only offline        (or http, taps, denylist, redis; repeatable)

1. HTTP. Starts the whole backend the way `tzt serve` does
   (`python -m app_backend.composition.cli serve --no-worker`) with a temporary data
   folder (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set) and ONE Granian
   worker, creates residents through the API (OTP, dev outbox, login; real-named, since transit and health need
   L2: their phones are enrolled in the dev registry first) and registers device keys, then runs
   `--http-rounds` short rounds, each loading one after the other: GET /api/v1/ping (the trivial baseline),
   POST /api/v1/codes/personal (residents' tokens round-robin), and POST /api/v1/verify as signed machine
   requests, each with its own nonce, all signed before the clock starts: transit with fresh server codes
   (single-use: the codes this round's issue row produced, each presented once, topped up unmeasured if transit
   may need more), health with server codes (reusable; issued each round, they live 60 s), health with fresh
   device codes, and POST /oidc/token (one login's authorization-code exchange by the demo department's app,
   client_secret_basic with a PKCE verifier; the single-use codes are minted through the authorization
   endpoint with the residents' tokens just before the row, outside its window), then the tiles' hot paths
   (issue 16): POST /api/v1/tiles/{id}/open on the demo tile 公积金查询 (the residents' tokens round-robin; each
   open is recorded) and POST /api/v1/tiles/impressions with four demo tiles (Redis counters), neither with a
   goal yet; one more ping closes the last round. A row's ratio is the median over the rounds of its rate
   over the mean of the pings either side of it (its round's and the next): the machine's speed drifts over
   seconds, and CPU steal by the hypervisor or other work comes in bursts of seconds, which skew the round they
   fall in, not the median.
   The load comes from a separate generator process speaking raw HTTP/1.1 keep-alive over asyncio. No client
   library: httpx tops out near 4k requests/s per process, which would flatten every ratio towards 1; this one
   needs about 40 us of CPU per request, and one process is enough (on 2 cores a second one only adds context
   switches). CPU use of the server, Redis, PostgreSQL, the generator, CPU steal and everything else is sampled
   over every row's window.
2. Offline. code_service.verifier.OfflineVerifier.verify against the cryptographic minimum with `cryptography`
   for the same codes (device code: load the compressed device point + 2 ECDSA P-256 verifies; server code:
   1 verify), one core (CPU time of the thread), medians over many short alternating rounds.
3. Taps. A gate's upload of 5000 taps (`--tap-batch`), each proven by a real code, to the same kind of server,
   one batch a round (`--tap-rounds`): taps/s, the worker's and PostgreSQL's CPU per tap, against the raw
   signature checks of the same codes (loadtests/bench/taps.py).
4. Deny list. IdSet.from_sorted over ten million sorted random ids: bytes held, lookup time present and absent.
5. Redis client. CPU per hot-path batch: redis-py's client against the shared connection
   (loadtests/bench/redis_client.py).

Ratios below their goals are reported, not failures: the command exits 0 unless the server cannot be started.
With `--profile DIR`, ping, issue and verify are loaded once more AFTER the measured rounds while py-spy samples the
Granian worker (`--profile-rate` samples a second); the top frames are printed and the flame graphs are written
to DIR: comparing a hot path's profile with ping's shows what it pays beyond the trivial endpoint."""
