// Classify a skin photo with the Skinscan bundle through MediaPipe Tasks.
//
// No label list and no pixel normalisation here: both come from the TFLite Model Metadata
// inside the .tflite (labels.txt is packed into the model; the model normalises 0..255 itself).
//
// build.gradle.kts:  implementation("com.google.mediapipe:tasks-vision:latest.release")
// Copy skinscan_int8.tflite into app/src/main/assets/ (keep it uncompressed: androidResources {
// noCompress += "tflite" }).
package com.example.skinscan

import android.content.Context
import android.graphics.Bitmap
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.vision.core.RunningMode
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier

class SkinscanClassifier(
    context: Context,
    modelAsset: String = "skinscan_int8.tflite",
    maxResults: Int = 3,
) : AutoCloseable {
    private val classifier: ImageClassifier = ImageClassifier.createFromOptions(
        context,
        ImageClassifier.ImageClassifierOptions.builder()
            .setBaseOptions(BaseOptions.builder().setModelAssetPath(modelAsset).build())
            .setRunningMode(RunningMode.IMAGE)
            .setMaxResults(maxResults)
            .build(),
    )

    /**
     * Top (label, score) pairs for one photo, best first. Any size, ARGB_8888; MediaPipe resizes
     * it to the model's input and feeds RGB 0..255. Scores are probabilities (0..1).
     * A screening aid, not a diagnosis.
     */
    fun classify(photo: Bitmap): List<Pair<String, Float>> {
        val result = classifier.classify(BitmapImageBuilder(photo).build())
        return result.classificationResult().classifications()[0].categories()
            .map { it.categoryName() to it.score() }
    }

    override fun close() = classifier.close()
}
