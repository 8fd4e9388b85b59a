# Shared by the side-by-side benchmark scripts (bench_compare.sh, bench_versus_llama.sh): source it.

# The quiver_bench binary (a harness-less cargo bench target, release profile), built if needed.
bench_binary() {
    local bin
    bin=$(cargo bench --bench quiver_bench --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
    [ -x "$bin" ] || { echo "could not build the quiver_bench target" >&2; return 1; }
    echo "$bin"
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (up to 10 s) until something listens on 127.0.0.1:$1.
wait_for_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
