package io.zkcoord.client;

/**
 * How to reach zkcoord instances that serve TLS: the CA certificate(s) to trust (PEM) and, for
 * mTLS, this client's certificate chain and private key (PEM, PKCS#8). {@code serverName} is the
 * name the server certificate must carry, when it is not the endpoint's host (may be null).
 */
public record Tls(byte[] caPem, byte[] certPem, byte[] keyPem, String serverName) {
    /** TLS trusting {@code caPem}, without a client certificate. */
    public static Tls trusting(byte[] caPem) {
        return new Tls(caPem, null, null, null);
    }

    /** mTLS: trusting {@code caPem}, presenting {@code certPem} with {@code keyPem}. */
    public static Tls mutual(byte[] caPem, byte[] certPem, byte[] keyPem) {
        return new Tls(caPem, certPem, keyPem, null);
    }

    /** The same, expecting the server certificate to carry {@code name}. */
    public Tls withServerName(String name) {
        return new Tls(caPem, certPem, keyPem, name);
    }
}
