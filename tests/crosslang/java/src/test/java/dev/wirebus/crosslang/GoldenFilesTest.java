package dev.wirebus.crosslang;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.Descriptors.Descriptor;
import com.google.protobuf.Descriptors.FileDescriptor;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import dev.wirebus.shop.orders.v1.Orders;
import dev.wirebus.shop.payments.v1.Payments;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The golden files Python wrote (tests/golden: bytes of each shop message, and
 * manifest.json with its type and canonical JSON) read by protobuf-java.
 */
class GoldenFilesTest {

  /** WIREBUS_GOLDEN_DIR, or tests/golden seen from this Maven project. */
  static final Path GOLDEN = goldenDir();

  static Path goldenDir() {
    String dir = System.getenv("WIREBUS_GOLDEN_DIR");
    return Path.of(dir == null || dir.isBlank() ? "../../golden" : dir).toAbsolutePath().normalize();
  }

  /** Every message type of the shop's protos, by full name, to its generated class. */
  static Map<String, Class<? extends Message>> generatedClasses() throws ClassNotFoundException {
    Map<String, Class<? extends Message>> classes = new TreeMap<>();
    for (FileDescriptor file : List.of(Orders.getDescriptor(), Payments.getDescriptor())) {
      String javaPackage = file.getOptions().getJavaPackage();
      for (Descriptor type : file.getMessageTypes()) {
        classes.put(
            type.getFullName(),
            Class.forName(javaPackage + "." + type.getName()).asSubclass(Message.class));
      }
    }
    return classes;
  }

  static JsonArray manifest() throws IOException {
    return JsonParser.parseString(
            Files.readString(GOLDEN.resolve("manifest.json"), StandardCharsets.UTF_8))
        .getAsJsonArray();
  }

  @Test
  void theManifestCoversEveryFileAndEveryMessageType() throws Exception {
    TreeSet<String> files = new TreeSet<>();
    TreeSet<String> types = new TreeSet<>();
    for (JsonElement entry : manifest()) {
      files.add(entry.getAsJsonObject().get("file").getAsString());
      types.add(entry.getAsJsonObject().get("type").getAsString());
    }
    TreeSet<String> onDisk;
    try (Stream<Path> listing = Files.list(GOLDEN)) {
      onDisk =
          listing
              .map(p -> p.getFileName().toString())
              .filter(name -> name.endsWith(".binpb"))
              .collect(Collectors.toCollection(TreeSet::new));
    }
    assertEquals(onDisk, files, "manifest.json vs the *.binpb files in " + GOLDEN);
    assertEquals(generatedClasses().keySet(), types, "message types of orders.proto + payments.proto");
  }

  @TestFactory
  List<DynamicTest> eachGoldenFileDecodesMatchesItsJsonAndReencodesToTheSameBytes()
      throws Exception {
    Map<String, Class<? extends Message>> classes = generatedClasses();
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonElement element : manifest()) {
      JsonObject entry = element.getAsJsonObject();
      String file = entry.get("file").getAsString();
      String type = entry.get("type").getAsString();
      JsonElement json = entry.get("json");
      tests.add(
          DynamicTest.dynamicTest(
              file + " as " + type,
              () -> {
                Class<? extends Message> cls = classes.get(type);
                assertTrue(cls != null, "no generated class for " + type);
                byte[] bytes = Files.readAllBytes(GOLDEN.resolve(file));

                // decode with the generated class
                Message decoded = (Message) cls.getMethod("parseFrom", byte[].class).invoke(null, bytes);
                assertEquals(type, decoded.getDescriptorForType().getFullName());
                assertTrue(
                    decoded.getUnknownFields().asMap().isEmpty(),
                    "fields the Java class does not know: " + decoded.getUnknownFields());

                // the same values as the manifest's canonical JSON
                Message.Builder fromJson = (Message.Builder) cls.getMethod("newBuilder").invoke(null);
                JsonFormat.parser().merge(json.toString(), fromJson);
                assertEquals(fromJson.build(), decoded, "bytes vs manifest JSON of " + file);

                // Java's canonical JSON is Python's canonical JSON
                assertEquals(
                    json, JsonParser.parseString(JsonFormat.printer().print(decoded)), "JSON of " + file);

                // and protobuf-java writes exactly the bytes Python wrote
                assertArrayEquals(bytes, decoded.toByteArray(), "re-encoded " + file);
                assertArrayEquals(bytes, fromJson.build().toByteArray(), "encoded from JSON " + file);
              }));
    }
    assertEquals(classes.size(), tests.size());
    return tests;
  }
}
