# Varnish as the comparison cache of `make bench` scenario 12 (varnishd -s malloc).
# The same three backends in round robin, the same TTL as Juggler's `cache=` and
# nginx's proxy_cache_valid; the uncached paths are passed, as Juggler's
# catch-all route and nginx's plain location pass them.
vcl 4.1;

import directors;

backend b1 { .host = "127.0.0.1"; .port = "@BACKEND1@"; .connect_timeout = 2s; .first_byte_timeout = 30s; }
backend b2 { .host = "127.0.0.1"; .port = "@BACKEND2@"; .connect_timeout = 2s; .first_byte_timeout = 30s; }
backend b3 { .host = "127.0.0.1"; .port = "@BACKEND3@"; .connect_timeout = 2s; .first_byte_timeout = 30s; }

sub vcl_init {
    new web = directors.round_robin();
    web.add_backend(b1);
    web.add_backend(b2);
    web.add_backend(b3);
}

sub vcl_recv {
    set req.backend_hint = web.backend();
    if (req.url !~ "^/c/") {
        return (pass);
    }
    # The cached route: looked up whatever the client sends (the bench sends no
    # cookie or Authorization; the built-in rules would only add checks).
    return (hash);
}

sub vcl_backend_response {
    if (bereq.url ~ "^/c/") {
        set beresp.ttl = @TTL@s;
        set beresp.grace = 0s;
    }
}
