package io.zkcoord.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientInterceptors;
import io.grpc.ForwardingClientCall;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.netty.handler.ssl.JdkSslContext;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslProvider;
import io.netty.handler.ssl.ZkcoordJdkAlpn;
import java.io.ByteArrayInputStream;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import javax.net.ssl.SSLException;
import zkcoord.v1.ElectionGrpc;
import zkcoord.v1.ElectionOuterClass;
import zkcoord.v1.LeaseGrpc;
import zkcoord.v1.LeaseOuterClass;
import zkcoord.v1.LockGrpc;
import zkcoord.v1.LockOuterClass;
import zkcoord.v1.ShardsGrpc;
import zkcoord.v1.ShardsOuterClass;

/**
 * A handle on a set of zkcoord instances; any of them serves any call.
 *
 * <p>Endpoints are {@code host:port} strings. Calls go to the current endpoint; a call that is
 * safe to repeat and answers UNAVAILABLE is repeated on the next endpoints (each once), and the
 * next endpoint becomes the current one. Connections are made lazily. Thread-safe; close it
 * when done (calls in flight then fail with CANCELLED or UNAVAILABLE).
 *
 * <pre>{@code
 * try (var client = ZkcoordClient.builder("10.0.0.1:7710,10.0.0.2:7710").tenant("payments").build()) { ... }
 * }</pre>
 */
public final class ZkcoordClient implements AutoCloseable {
    /** Deadline of unary calls unless the builder says otherwise. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(10);
    /** The gRPC metadata header naming the tenant of a call (see the README's Tenants section). */
    public static final String TENANT_HEADER = "zkcoord-tenant";

    private static final Metadata.Key<String> TENANT_KEY = Metadata.Key.of(TENANT_HEADER, Metadata.ASCII_STRING_MARSHALLER);

    private final List<String> names;
    private final List<ManagedChannel> managed;
    private final List<Channel> channels;
    private final Duration timeout;
    private int current;

    /** How to build a {@link ZkcoordClient}. */
    public static final class Builder {
        private final List<String> endpoints;
        private Duration timeout = DEFAULT_TIMEOUT;
        private Tls tls;
        private String tenant;

        private Builder(List<String> endpoints) {
            this.endpoints = endpoints;
        }

        /** The deadline of unary calls (default 10 s). */
        public Builder timeout(Duration timeout) {
            this.timeout = timeout;
            return this;
        }

        /** Connects over TLS (mTLS when it carries a client certificate). */
        public Builder tls(Tls tls) {
            this.tls = tls;
            return this;
        }

        /** Sends every call to this tenant (the {@code zkcoord-tenant} header). */
        public Builder tenant(String tenant) {
            this.tenant = tenant;
            return this;
        }

        /**
         * The client.
         *
         * @throws IllegalArgumentException when no endpoint was given or the TLS material is unusable
         */
        public ZkcoordClient build() {
            return new ZkcoordClient(endpoints, timeout, tls, tenant);
        }
    }

    /** A builder for the comma-separated {@code host:port} endpoints. */
    public static Builder builder(String endpoints) {
        return new Builder(Arrays.asList(endpoints.split(",")));
    }

    /** A builder for these {@code host:port} endpoints. */
    public static Builder builder(List<String> endpoints) {
        return new Builder(List.copyOf(endpoints));
    }

    /** A client with the defaults, for the comma-separated {@code host:port} endpoints. */
    public static ZkcoordClient connect(String endpoints) {
        return builder(endpoints).build();
    }

    private ZkcoordClient(List<String> endpoints, Duration timeout, Tls tls, String tenant) {
        List<String> names = new ArrayList<>();
        for (String endpoint : endpoints) {
            String name = endpoint.strip();
            for (String scheme : List.of("http://", "https://", "grpc://")) {
                if (name.startsWith(scheme)) {
                    name = name.substring(scheme.length());
                }
            }
            while (name.endsWith("/")) {
                name = name.substring(0, name.length() - 1);
            }
            if (!name.isEmpty()) {
                names.add(name);
            }
        }
        if (names.isEmpty()) {
            throw new IllegalArgumentException("no zkcoord endpoints given");
        }
        this.names = List.copyOf(names);
        this.timeout = timeout;
        this.managed = new ArrayList<>();
        this.channels = new ArrayList<>();
        for (String name : names) {
            ManagedChannel channel = channel(name, tls);
            managed.add(channel);
            channels.add(tenant == null ? channel : ClientInterceptors.intercept(channel, tenantHeader(tenant)));
        }
    }

    private static ManagedChannel channel(String name, Tls tls) {
        NettyChannelBuilder builder = NettyChannelBuilder.forTarget(name)
                // Notice a dead peer on an idle stream, as the Rust client does.
                .keepAliveTime(10, TimeUnit.SECONDS)
                .keepAliveTimeout(5, TimeUnit.SECONDS)
                .keepAliveWithoutCalls(true)
                // The client decides itself what to repeat, and where.
                .disableRetry();
        if (tls == null) {
            builder.usePlaintext();
        } else {
            try {
                builder.sslContext(sslContext(tls)).useTransportSecurity();
            } catch (SSLException | RuntimeException e) {
                throw new IllegalArgumentException("unusable TLS material: " + e.getMessage(), e);
            }
            if (tls.serverName() != null) {
                builder.overrideAuthority(tls.serverName());
            }
        }
        return builder.build();
    }

    /**
     * The TLS context: grpc's usual one; where netty lacks JDK ALPN (Debian's build), the JDK's
     * own TLS with ALPN through {@link ZkcoordJdkAlpn}.
     */
    private static SslContext sslContext(Tls tls) throws SSLException {
        try {
            return withMaterial(GrpcSslContexts.forClient(), tls).build();
        } catch (UnsupportedOperationException noJdkAlpn) {
            SslContext plain = withMaterial(SslContextBuilder.forClient().sslProvider(SslProvider.JDK), tls).build();
            return ZkcoordJdkAlpn.h2Client((JdkSslContext) plain);
        }
    }

    private static SslContextBuilder withMaterial(SslContextBuilder ssl, Tls tls) {
        ssl.trustManager(new ByteArrayInputStream(tls.caPem()));
        if (tls.certPem() != null && tls.keyPem() != null) {
            ssl.keyManager(new ByteArrayInputStream(tls.certPem()), new ByteArrayInputStream(tls.keyPem()));
        }
        return ssl;
    }

    private static ClientInterceptor tenantHeader(String tenant) {
        return new ClientInterceptor() {
            @Override
            public <Q, A> ClientCall<Q, A> interceptCall(MethodDescriptor<Q, A> method, CallOptions options, Channel next) {
                return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
                    @Override
                    public void start(Listener<A> listener, Metadata headers) {
                        headers.put(TENANT_KEY, tenant);
                        super.start(listener, headers);
                    }
                };
            }
        };
    }

    /** The endpoints, as given (without schemes). */
    public List<String> endpoints() {
        return names;
    }

    /** The deadline of unary calls. */
    public Duration timeout() {
        return timeout;
    }

    /** The index of the endpoint currently preferred. */
    public synchronized int current() {
        return current;
    }

    /**
     * Moves the preference past endpoint {@code failed} (unless another caller already moved it)
     * and returns the endpoint now preferred. The connection to that endpoint is retried at once
     * if it was backing off.
     */
    public int rotate(int failed) {
        int now;
        synchronized (this) {
            if (current == Math.floorMod(failed, names.size())) {
                current = Math.floorMod(failed + 1, names.size());
            }
            now = current;
        }
        managed.get(now).resetConnectBackoff();
        return now;
    }

    /** The channel of endpoint {@code index}. */
    public Channel channel(int index) {
        return channels.get(Math.floorMod(index, channels.size()));
    }

    /** The channel of the current endpoint. */
    public Channel channel() {
        return channel(current());
    }

    /** A raw zkcoord.v1.Lease stub on the current endpoint, with the unary deadline. */
    public LeaseGrpc.LeaseBlockingStub leases() {
        return LeaseGrpc.newBlockingStub(channel()).withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    /** A raw zkcoord.v1.Election stub on the current endpoint, with the unary deadline. */
    public ElectionGrpc.ElectionBlockingStub elections() {
        return ElectionGrpc.newBlockingStub(channel()).withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    /** A raw zkcoord.v1.Lock stub on the current endpoint, with the unary deadline. */
    public LockGrpc.LockBlockingStub locks() {
        return LockGrpc.newBlockingStub(channel()).withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    /** A raw zkcoord.v1.Shards stub on the current endpoint, with the unary deadline. */
    public ShardsGrpc.ShardsBlockingStub shards() {
        return ShardsGrpc.newBlockingStub(channel()).withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    long deadlineMs() {
        return timeout.toMillis();
    }

    /**
     * Runs {@code call} on the channel of the current endpoint and, while it fails with
     * UNAVAILABLE, on each next one (every endpoint once). Only for calls that are safe to repeat.
     *
     * @throws ZkcoordException with the status of the last attempt
     */
    public <T> T retrying(Function<Channel, T> call) {
        int at = current();
        RuntimeException last = null;
        for (int i = 0; i < channels.size(); i++) {
            try {
                return call.apply(channel(at));
            } catch (RuntimeException error) {
                if (ZkcoordException.codeOf(error) != Status.Code.UNAVAILABLE) {
                    throw ZkcoordException.from(error);
                }
                last = error;
                at = rotate(at);
            }
        }
        throw ZkcoordException.from(last);
    }

    // Read-only calls, for convenience (each retried on UNAVAILABLE).

    /** Lease.TimeToLive: the lease's owner, ttl, health and bindings. */
    public LeaseOuterClass.TimeToLiveResponse timeToLive(long leaseId) {
        var request = LeaseOuterClass.TimeToLiveRequest.newBuilder().setLeaseId(leaseId).build();
        return retrying(ch -> LeaseGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).timeToLive(request));
    }

    /** Election.Leader: the current leader, if any. */
    public Optional<ElectionOuterClass.LeaderInfo> leader(String election) {
        var request = ElectionOuterClass.LeaderRequest.newBuilder().setElection(election).build();
        var response = retrying(ch -> ElectionGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).leader(request));
        return response.hasLeader() ? Optional.of(response.getLeader()) : Optional.empty();
    }

    /** Election.Candidates: the candidates in election order. */
    public ElectionOuterClass.CandidatesResponse candidates(String election) {
        var request = ElectionOuterClass.CandidatesRequest.newBuilder().setElection(election).build();
        return retrying(ch -> ElectionGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).candidates(request));
    }

    /** Lock.Holders: the holders and waiter counts of {@code key} (of every key starting with it when {@code prefix}). */
    public List<LockOuterClass.KeyHolders> holders(String key, boolean prefix) {
        var request = LockOuterClass.HoldersRequest.newBuilder().setKey(key).setPrefix(prefix).build();
        return retrying(ch -> LockGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).holders(request)).getKeysList();
    }

    /** Lock.Holders of exactly {@code key}. */
    public List<LockOuterClass.KeyHolders> holders(String key) {
        return holders(key, false);
    }

    /** Shards.Members: a shard group's members (and its drained member ids). */
    public ShardsOuterClass.MembersResponse shardMembers(String group) {
        var request = ShardsOuterClass.MembersRequest.newBuilder().setGroup(group).build();
        return retrying(ch -> ShardsGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).members(request));
    }

    /** Shards.Assignment: a shard group's table, as ranges. */
    public ShardsOuterClass.AssignmentResponse shardAssignment(String group) {
        var request = ShardsOuterClass.AssignmentRequest.newBuilder().setGroup(group).build();
        return retrying(ch -> ShardsGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).assignment(request));
    }

    /** Shards.Drain: takes every shard away from {@code memberId} and gives it none until {@link #undrain} (idempotent). */
    public void drain(String group, String memberId) {
        var request = ShardsOuterClass.DrainRequest.newBuilder().setGroup(group).setMemberId(memberId).build();
        retrying(ch -> ShardsGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).drain(request));
    }

    /** Shards.Undrain: undoes {@link #drain} (idempotent). */
    public void undrain(String group, String memberId) {
        var request = ShardsOuterClass.UndrainRequest.newBuilder().setGroup(group).setMemberId(memberId).build();
        retrying(ch -> ShardsGrpc.newBlockingStub(ch).withDeadlineAfter(deadlineMs(), TimeUnit.MILLISECONDS).undrain(request));
    }

    /** Closes the channels (calls in flight fail). */
    @Override
    public void close() {
        for (ManagedChannel channel : managed) {
            channel.shutdownNow();
        }
    }

    @Override
    public String toString() {
        return "ZkcoordClient" + names;
    }
}
