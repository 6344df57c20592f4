// modelfusion's AUTOMATIC1111 image generator, unmodified, against `brushwork serve`.
//
//   npx tsx modelfusion-a1111.ts http://127.0.0.1:7860 out.png   (BRUSHWORK_AUTH=user:pass)
//
// Draws "a red cube" on the checkpoint named "tiny" (64x64, 2 Euler steps, CFG 7, seed 1234),
// writes the image and prints what the server answered (the number of images and the parsed
// `info`; modelfusion's schema keeps `parameters` as an empty object) as one JSON line for
// tests/node/test_modelfusion.py.
import { writeFileSync } from "node:fs";
import { automatic1111, generateImage } from "modelfusion";

type A1111Reply = { images: string[]; info: string };

const [baseUrl, outFile] = process.argv.slice(2);
if (!baseUrl || !outFile) {
  console.error("usage: modelfusion-a1111.ts BASE_URL OUT_FILE");
  process.exit(2);
}
const auth = process.env.BRUSHWORK_AUTH;
const headers: Record<string, string> = auth
  ? { Authorization: "Basic " + Buffer.from(auth, "utf8").toString("base64") }
  : {};

const api = automatic1111.Api({ baseUrl: `${baseUrl}/sdapi/v1`, headers });
const model = automatic1111
  .ImageGenerator({
    api,
    model: "tiny",
    width: 64,
    height: 64,
    steps: 2,
    cfgScale: 7,
    sampler: "Euler",
    seed: 1234,
  })
  .withTextPrompt();

const result = await generateImage({ model, prompt: "a red cube", fullResponse: true });
writeFileSync(outFile, result.image);
const reply = result.rawResponse as A1111Reply;
console.log(
  JSON.stringify({
    images: result.images.length,
    info: JSON.parse(reply.info),
  }),
);
