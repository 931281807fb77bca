package io.netty.handler.ssl;

/**
 * HTTP/2's ALPN over the JDK's own TLS (Java 9+) for netty builds without
 * {@code JdkAlpnApplicationProtocolNegotiator}: Debian's libnetty-java 4.1.48 leaves it out (with
 * the Jetty ALPN and Conscrypt code it needs), so {@code GrpcSslContexts.forClient()} fails there
 * with "JDK provider does not support ALPN protocol". This uses netty's own Java 9 engine
 * ({@code Java9SslEngine}, which that build keeps) exactly as upstream netty does on Java 9+.
 * In this package because those classes are package-private; used by
 * {@code io.zkcoord.client.ZkcoordClient} only when the ordinary way fails.
 */
public final class ZkcoordJdkAlpn {
    private ZkcoordJdkAlpn() {}

    /** A client context like {@code jdk} (its certificates and ciphers) that offers "h2" by ALPN. */
    public static SslContext h2Client(JdkSslContext jdk) {
        JdkApplicationProtocolNegotiator.SslEngineWrapperFactory java9 = Java9SslEngine::new;
        JdkApplicationProtocolNegotiator negotiator = new JdkBaseApplicationProtocolNegotiator(java9,
                JdkBaseApplicationProtocolNegotiator.NO_FAIL_SELECTOR_FACTORY,
                JdkBaseApplicationProtocolNegotiator.NO_FAIL_SELECTION_LISTENER_FACTORY, "h2");
        return new JdkSslContext(jdk.context(), true, jdk.cipherSuites(), IdentityCipherSuiteFilter.INSTANCE, negotiator,
                ClientAuth.NONE, null, false);
    }
}
