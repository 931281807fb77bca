// One node of a master/standby pair, in Kotlin, on the Java client (clients/java): its twins are
// JavaNode.java, rust_node.rs and python_node.py, with the same arguments and output (`ready`,
// `elected <term> <token>`, `lost <reason>`, `bye` after SIGTERM). It campaigns, and while it
// leads -- checked with `elector.leadership()` right before each unit of work, the client rule --
// appends `<fencing token> <id>` to the work file every 50 ms.
//
//     java -cp "$(clients/java/build.sh)" KotlinNodeKt --endpoints 127.0.0.1:7710 --election ledger \
//         --id node-k --priority 1 --ttl-ms 2000 --work-file /tmp/work.log --preempt

import io.zkcoord.client.LeaderElector
import io.zkcoord.client.LeaderListener
import io.zkcoord.client.LeaseKeeper
import io.zkcoord.client.ZkcoordClient
import java.io.File
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicReference
import kotlin.system.exitProcess

fun say(line: String) = synchronized(System.out) { println(line); System.out.flush() }

fun main(argv: Array<String>) {
    val args = mutableMapOf("--priority" to "0", "--ttl-ms" to "2000")
    var i = 0
    while (i < argv.size) {
        if (argv[i] == "--preempt") args["--preempt"] = "true" else args[argv[i]] = argv[++i]
        i++
    }
    val id = args.getValue("--id")
    val work = File(args.getValue("--work-file"))
    val stopping = CountDownLatch(1)
    val stopped = CountDownLatch(1)
    Runtime.getRuntime().addShutdownHook(Thread { stopping.countDown(); stopped.await() })

    val client = ZkcoordClient.connect(args.getValue("--endpoints"))
    val lease = LeaseKeeper.grant(client, id, args.getValue("--ttl-ms").toLong())
    val announced = AtomicReference<Pair<Long, Long>?>(null)
    val campaign = LeaderElector.builder(client, lease, args.getValue("--election"), id)
        .priority(args.getValue("--priority").toInt())
        .listener(object : LeaderListener {
            override fun isLeader(term: Long, fencingToken: Long) {
                announced.set(term to fencingToken)
                say("elected $term $fencingToken")
            }

            override fun notLeader(reason: String) {
                announced.set(null)
                say("lost $reason")
            }
        })
    if ("--preempt" in args) campaign.preempt(true)
    val elector = campaign.campaign()
    say("ready ${lease.id()}")

    while (stopping.count > 0) {
        if (elector.isOver) {
            say("lost candidacy-ended")
            client.close()
            stopped.countDown()
            exitProcess(1)
        }
        // The client rule: only with a valid leadership, the one announced, and its token.
        val leadership = elector.leadership().orElse(null)
        if (leadership != null && announced.get() == leadership.term() to leadership.fencingToken()) {
            work.appendText("${leadership.fencingToken()} $id\n")
        }
        stopping.await(50, TimeUnit.MILLISECONDS)
    }
    elector.resign()
    lease.revoke()
    client.close()
    say("bye")
    stopped.countDown()
}
